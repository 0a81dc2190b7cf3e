/*
 * reqtrace.bpf.c: the kernel half of a request's timeline, joined in BPF maps.
 *
 * Theory of operation
 * -------------------
 * Raw events are not streamed to user space (a naive probe set costs more than the server).
 * Instead each event updates a small piece of state and only a few points emit a record:
 *
 *   per CPU     hardirq in progress, NET_RX raise/entry, current NAPI poll start, and two
 *               small rings of recent packets: queued by netif_rx (lo, veth) and handed to
 *               the stack by netif_receive_skb, matched later by skb address
 *   per socket  identity (ports, addresses, cookie) and the receive path of the first data
 *               segment since the last recv, plus segment/byte totals (LRU, key = sk)
 *   per thread  the last epoll wait (enter, exit, wakeup) and the syscall in flight
 *
 *   recv exit   -> RT_REC_RECV: socket + syscall + last epoll wait + pending receive path
 *   send exit   -> RT_REC_SEND: socket + syscall + device transmits inside it
 *   accept exit, TCP state changes, retransmits, resets, drops -> their own records
 *
 * Cost rules (every probe here runs for the whole machine, not just the server):
 *   - the target filters are arrays in the config, compared inline (no hash lookup);
 *   - per-packet state lives in per-CPU rings, never in a shared map (no lock, no update);
 *   - per-thread state is one hash entry made once per thread, not per syscall;
 *   - the per-socket LRU uses per-CPU LRU lists (BPF_F_NO_COMMON_LRU): no global lock;
 *   - records are submitted without waking the consumer, except every Nth.
 * Receive processing is synchronous per packet (netif_receive_skb -> IP -> TCP -> the
 * socket) on one CPU, so the packet rings hold the few skbs in flight on that CPU; a
 * segment TCP processes later from the socket backlog (socket busy in a syscall) is marked
 * RT_RX_PROCESS_CONTEXT and keeps only its TCP times.
 *
 * Filters (target processes, target local ports) are written by the loader before traffic
 * flows. Kernel data is read only from tracepoint fields (layout from tracefs) or kept as
 * opaque pointers; nothing is read through kernel header struct layouts.
 *
 * Each probe point is compiled with the adapter its plan entry chose: the loader defines
 * RT_<POINT> to one of the RT_MECH_* values (see tracer/kernel/bpf_program.py). Points left
 * undefined are absent and their fields stay 0 in the records.
 */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <asm/unistd.h> /* syscall numbers: ABI, the same for every kernel of an arch */
/* Enums that tracepoint records use as field types (the generated argument structs need
 * them complete); only the enum definitions are used, never a struct layout. */
#if __has_include(<net/dropreason-core.h>)
#include <net/dropreason-core.h>
#elif __has_include(<net/dropreason.h>)
#include <net/dropreason.h>
#endif
#if __has_include(<net/rstreason.h>)
#include <net/rstreason.h>
#endif

#include "events.h"

#define RT_MECH_TRACEPOINT 1
#define RT_MECH_RAW_TRACEPOINT 2
#define RT_MECH_FENTRY 3
#define RT_MECH_KPROBE 4

#ifndef RT_RINGBUF_PAGES
#define RT_RINGBUF_PAGES 256
#endif

#define RT_SOFTIRQ_NET_RX 3
#define RT_TCP_ESTABLISHED 1
#define RT_TCP_SYN_RECV 3
#define RT_TCP_CLOSE 7
#define RT_TCP_LISTEN 10
#define RT_IPPROTO_TCP 6
#define RT_AF_INET 2
#define RT_AF_INET6 10

#define RT_IO_NONE 0
#define RT_IO_RECV 1
#define RT_IO_SEND 2
#define RT_IO_ACCEPT 3
#define RT_IO_CLOSE 4

#define RT_PACKET_RING 8 /* packets remembered per CPU; a power of two */
#ifndef RT_NR_CPUS
#define RT_NR_CPUS 64 /* possible CPUs; the loader passes the real number */
#endif

/* A packet handed to the stack by netif_receive_skb, waiting for TCP to claim it, with
 * the softirq context it arrived in (TCP may claim it later, from another context). */
struct rt_packet {
    __u64 skb;
    __u64 netif_rx_ts;
    __u64 netif_receive_ts;
    __u64 poll_start_ts;
    __u64 softirq_entry_ts;
    __u64 softirq_raise_ts;
    __u64 hardirq_ts;
    __u32 irq;
    __u32 flags; /* RT_RX_BACKLOG | RT_RX_SKB_SEEN | RT_RX_FROM_HARDIRQ */
    char dev[RT_IFNAMSIZ];
};

/* A packet queued on this CPU's backlog by netif_rx (lo, veth). */
struct rt_queued {
    __u64 skb;
    __u64 ts;
};

struct rt_cpu_state {
    __u64 hardirq_ts;        /* current/last hardirq on this CPU */
    __u64 raise_ts;          /* first NET_RX raise since the last softirq entry */
    __u64 raise_hardirq_ts;  /* hardirq during which NET_RX was raised */
    __u64 cur_raise_ts;      /* ... as seen by the softirq now running */
    __u64 cur_hardirq_ts;
    __u64 softirq_entry_ts;
    __u64 poll_start_ts;     /* softirq entry, then the end of each NAPI poll */
    __u64 last_sk;           /* last tracked socket that received on this CPU */
    __u32 irq;
    __u32 raise_irq;
    __u32 cur_irq;
    __u32 in_hardirq;
    __u32 raise_from_hardirq;
    __u32 cur_from_hardirq;
    __u32 in_net_rx;
    __u32 submitted;         /* records since the last forced consumer wakeup */
    __u32 queued_next;       /* next slot of `queued` */
    __u32 packet_next;       /* next slot of `packets` */
    struct rt_queued queued[RT_PACKET_RING];
    struct rt_packet packets[RT_PACKET_RING];
};

struct rt_sock_state {
    struct rt_sock sock;
    struct rt_rx_path rx;
    __u64 syn_recv_ts;
};

/* The syscall a server thread has in flight (one at a time per thread). */
struct rt_syscall {
    __u64 enter_ts;
    __u64 sk;
    __u64 xmit_first_ts;
    __u64 xmit_last_ts;
    __s32 fd;
    __s32 sk_ret;
    __u32 nr;
    __u32 kind; /* RT_IO_*; RT_IO_NONE when no syscall is in flight */
    __u32 xmit_count;
    __u32 xmit_bytes;
    __s32 xmit_rc;
    __u32 _pad;
    char dev[RT_IFNAMSIZ];
};

struct rt_thread_state {
    __u64 epoll_enter_ts;
    __u64 epoll_exit_ts;
    __u64 wakeup_ts;
    __s32 epoll_ready;
    __u32 in_epoll;
    __u32 waker_cpu;
    __u32 _pad;
    struct rt_syscall sc;
};

BPF_RINGBUF_OUTPUT(events, RT_RINGBUF_PAGES);
BPF_ARRAY(lost, __u64, RT_REC_TYPES);
BPF_ARRAY(config, struct rt_config, 1);
/* Indexed by CPU id rather than a per-CPU map: each CPU writes only its own slot, but a
 * segment TCP processes later (from the socket backlog, on any CPU) must find its packet
 * in the ring of the CPU that received it. */
BPF_ARRAY(cpu_state, struct rt_cpu_state, RT_NR_CPUS);
BPF_F_TABLE("lru_hash", __u64, struct rt_sock_state, sock_state, 32768, BPF_F_NO_COMMON_LRU);
BPF_HASH(thread_state, __u32, struct rt_thread_state, 16384);

/* ---- helpers ------------------------------------------------------------------------ */

static __always_inline struct rt_cpu_state *rt_cpu(void)
{
    __u32 cpu = bpf_get_smp_processor_id();
    return cpu_state.lookup(&cpu);
}

static __always_inline struct rt_config *rt_config(void)
{
    __u32 zero = 0;
    return config.lookup(&zero);
}

static __always_inline int rt_tgid_wanted(__u32 tgid)
{
    struct rt_config *cfg = rt_config();
    if (!cfg || !(cfg->flags & RT_CFG_ENABLED))
        return 0;
    if (!(cfg->flags & RT_CFG_FILTER_TGID))
        return 1;
#pragma unroll
    for (int i = 0; i < RT_MAX_TARGETS; i++) {
        if (i < cfg->tgid_count && cfg->tgids[i] == tgid)
            return 1;
    }
    return 0;
}

static __always_inline int rt_port_wanted(__u16 lport)
{
    struct rt_config *cfg = rt_config();
    if (!cfg || !(cfg->flags & RT_CFG_ENABLED))
        return 0;
    if (!(cfg->flags & RT_CFG_FILTER_PORT))
        return 1;
#pragma unroll
    for (int i = 0; i < RT_MAX_TARGETS; i++) {
        if (i < cfg->port_count && cfg->ports[i] == lport)
            return 1;
    }
    return 0;
}

/* The calling thread's state if it belongs to a target process (created on first use). */
static __always_inline struct rt_thread_state *rt_target_thread(void)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!rt_tgid_wanted(id >> 32))
        return NULL;
    __u32 tid = (__u32)id;
    struct rt_thread_state *t = thread_state.lookup(&tid);
    if (t)
        return t;
    struct rt_thread_state fresh = {};
    thread_state.update(&tid, &fresh);
    return thread_state.lookup(&tid);
}

/* The calling thread's state only if it already has a syscall of `kind` in flight. */
static __always_inline struct rt_syscall *rt_syscall_in_flight(__u32 kind)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!rt_tgid_wanted(id >> 32))
        return NULL;
    __u32 tid = (__u32)id;
    struct rt_thread_state *t = thread_state.lookup(&tid);
    if (!t || t->sc.kind != kind)
        return NULL;
    return &t->sc;
}

static __always_inline void rt_fill_head(struct rt_head *head, __u32 type, __u64 now)
{
    __u64 id = bpf_get_current_pid_tgid();
    head->ts_ns = now;
    head->type = type;
    head->cpu = bpf_get_smp_processor_id();
    head->tgid = id >> 32;
    head->tid = (__u32)id;
}

static __always_inline void rt_count_lost(__u32 type)
{
    __u64 *n = lost.lookup(&type);
    if (n)
        __sync_fetch_and_add(n, 1);
}

/* Wake the consumer only every `wakeup_every` records per CPU: wakeups dominate BPF cost. */
static __always_inline __u64 rt_submit_flags(void)
{
    struct rt_config *cfg = rt_config();
    struct rt_cpu_state *c = rt_cpu();
    if (!cfg || !c || cfg->wakeup_every <= 1)
        return 0;
    c->submitted += 1;
    if (c->submitted >= cfg->wakeup_every) {
        c->submitted = 0;
        return BPF_RB_FORCE_WAKEUP;
    }
    return BPF_RB_NO_WAKEUP;
}

/* Room for one record, or NULL with the loss counted for its type. */
static __always_inline void *rt_reserve(__u32 size, __u32 type)
{
    void *record = events.ringbuf_reserve(size);
    if (!record)
        rt_count_lost(type);
    return record;
}

static __always_inline void rt_submit(void *record)
{
    events.ringbuf_submit(record, rt_submit_flags());
}

static __always_inline void rt_copy_dev(char *dst, const char *src)
{
    __builtin_memcpy(dst, src, RT_IFNAMSIZ);
}

/* sockaddr_in / sockaddr_in6 as stored by TP_STORE_ADDR_PORTS (28 bytes). The source
 * points into the tracepoint record; the verifier forbids loads through an offset ctx
 * pointer, so it is copied with a helper first. */
static __always_inline void rt_sockaddr_to(__u8 *addr, __u16 *family, const __u8 *sa)
{
    __u8 buf[28] = {};
    bpf_probe_read_kernel(buf, sizeof(buf), sa);
    __u16 fam = buf[0] | (buf[1] << 8);
    *family = fam;
    if (fam == RT_AF_INET) {
        __builtin_memcpy(addr, buf + 4, 4);
    } else if (fam == RT_AF_INET6) {
        __builtin_memcpy(addr, buf + 8, 16);
    }
}

static __always_inline struct rt_sock_state *rt_sock_state_get(__u64 sk)
{
    struct rt_sock_state *st = sock_state.lookup(&sk);
    if (st)
        return st;
    struct rt_sock_state fresh = {};
    fresh.sock.sk = sk;
    sock_state.update(&sk, &fresh);
    return sock_state.lookup(&sk);
}

static __always_inline int rt_in_close_fd(void)
{
    struct rt_syscall *sc = rt_syscall_in_flight(RT_IO_CLOSE);
    return sc ? sc->fd : -1;
}

/* ---- receive path: hardirq, NET_RX softirq, NAPI, netif_rx/receive -------------------- */

static __always_inline int rt_on_hardirq_entry(__u32 irq)
{
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
    c->in_hardirq = 1;
    c->hardirq_ts = bpf_ktime_get_ns();
    c->irq = irq;
    return 0;
}

static __always_inline int rt_on_hardirq_exit(void)
{
    struct rt_cpu_state *c = rt_cpu();
    if (c)
        c->in_hardirq = 0;
    return 0;
}

static __always_inline int rt_on_softirq_raise(__u32 vec)
{
    if (vec != RT_SOFTIRQ_NET_RX)
        return 0;
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
    if (!c->raise_ts)
        c->raise_ts = bpf_ktime_get_ns();
    if (c->in_hardirq && !c->raise_from_hardirq) {
        c->raise_from_hardirq = 1;
        c->raise_hardirq_ts = c->hardirq_ts;
        c->raise_irq = c->irq;
    }
    return 0;
}

static __always_inline int rt_on_softirq_entry(__u32 vec)
{
    if (vec != RT_SOFTIRQ_NET_RX)
        return 0;
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    c->softirq_entry_ts = now;
    c->poll_start_ts = now;
    c->in_net_rx = 1;
    c->cur_raise_ts = c->raise_ts;
    c->cur_from_hardirq = c->raise_from_hardirq;
    c->cur_hardirq_ts = c->raise_hardirq_ts;
    c->cur_irq = c->raise_irq;
    c->raise_ts = 0;
    c->raise_from_hardirq = 0;
    c->raise_hardirq_ts = 0;
    return 0;
}

static __always_inline int rt_on_softirq_exit(__u32 vec)
{
    if (vec != RT_SOFTIRQ_NET_RX)
        return 0;
    struct rt_cpu_state *c = rt_cpu();
    if (c)
        c->in_net_rx = 0;
    return 0;
}

/* A NAPI poll ended: the next one on this CPU starts now. */
static __always_inline int rt_on_napi_poll_end(void)
{
    struct rt_cpu_state *c = rt_cpu();
    if (c)
        c->poll_start_ts = bpf_ktime_get_ns();
    return 0;
}

/* A driver's poll function started (fentry/kprobe on the NIC driver point). */
static __always_inline int rt_on_driver_poll_start(void)
{
    return rt_on_napi_poll_end();
}

/*
 * skb addresses are reused all the time (the kernel recycles skb memory), and not every
 * remembered packet is claimed (pure ACKs never reach the socket code that claims them),
 * so a stale entry could match a new packet at the same address. Every write therefore
 * evicts older entries for the same address first, and claims refuse entries older than
 * RT_PACKET_MAX_AGE_NS.
 */
#define RT_PACKET_MAX_AGE_NS 1000000000ULL

static __always_inline int rt_on_netif_rx(__u64 skb)
{
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
#pragma unroll
    for (int i = 0; i < RT_PACKET_RING; i++) {
        if (c->queued[i].skb == skb)
            c->queued[i].skb = 0;
    }
    __u32 slot = c->queued_next & (RT_PACKET_RING - 1);
    c->queued_next = slot + 1;
    c->queued[slot].skb = skb;
    c->queued[slot].ts = bpf_ktime_get_ns();
    return 0;
}

/* Remember the packet for TCP; returns its slot so the adapter can add the device name. */
static __always_inline struct rt_packet *rt_on_netif_receive(__u64 skb)
{
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return NULL;
#pragma unroll
    for (int i = 0; i < RT_PACKET_RING; i++) {
        if (c->packets[i].skb == skb)
            c->packets[i].skb = 0;
    }
    __u32 slot = c->packet_next & (RT_PACKET_RING - 1);
    c->packet_next = slot + 1;
    struct rt_packet *p = &c->packets[slot];
    __u64 now = bpf_ktime_get_ns();
    p->skb = skb;
    p->netif_receive_ts = now;
    p->flags = RT_RX_SKB_SEEN;
    p->netif_rx_ts = 0;
    p->hardirq_ts = 0;
    p->irq = 0;
    p->dev[0] = 0;
    if (c->in_net_rx) {
        p->poll_start_ts = c->poll_start_ts;
        p->softirq_entry_ts = c->softirq_entry_ts;
        p->softirq_raise_ts = c->cur_raise_ts;
    } else {
        p->poll_start_ts = 0;
        p->softirq_entry_ts = 0;
        p->softirq_raise_ts = 0;
    }
#pragma unroll
    for (int i = 0; i < RT_PACKET_RING; i++) {
        if (c->queued[i].skb == skb) {
            if (now - c->queued[i].ts < RT_PACKET_MAX_AGE_NS) {
                p->netif_rx_ts = c->queued[i].ts;
                p->flags |= RT_RX_BACKLOG;
            }
            c->queued[i].skb = 0;
        }
    }
    /* A packet that came through netif_rx was sent by software on this host (lo, veth):
     * never blame a NIC interrupt for it, even if one raised the same softirq. */
    if (c->in_net_rx && c->cur_from_hardirq && !(p->flags & RT_RX_BACKLOG)) {
        p->flags |= RT_RX_FROM_HARDIRQ;
        p->hardirq_ts = c->cur_hardirq_ts;
        p->irq = c->cur_irq;
    }
    return p;
}

/* Copy a remembered packet's receive path if `skb` is in CPU `cpu`'s ring. */
static __always_inline int rt_claim_packet(__u32 cpu, __u64 skb, __u64 now,
                                           struct rt_rx_path *rx)
{
    struct rt_cpu_state *c = cpu_state.lookup(&cpu);
    if (!c)
        return 0;
#pragma unroll
    for (int i = 0; i < RT_PACKET_RING; i++) {
        struct rt_packet *p = &c->packets[i];
        if (p->skb == skb && now - p->netif_receive_ts < RT_PACKET_MAX_AGE_NS) {
            rx->netif_rx_ts = p->netif_rx_ts;
            rx->netif_receive_ts = p->netif_receive_ts;
            rx->poll_start_ts = p->poll_start_ts;
            rx->softirq_entry_ts = p->softirq_entry_ts;
            rx->softirq_raise_ts = p->softirq_raise_ts;
            rx->hardirq_ts = p->hardirq_ts;
            rx->irq = p->irq;
            rx->rx_cpu = cpu;
            rx->flags |= p->flags;
            rt_copy_dev(rx->dev, p->dev);
            p->skb = 0;
            return 1;
        }
    }
    return 0;
}

/* ---- TCP receive, data ready, wakeup --------------------------------------------------- */

static __always_inline int rt_on_tcp_segment(__u64 sk, __u64 skb, __u16 lport, __u16 rport,
                                             const __u8 *saddr, const __u8 *daddr,
                                             __u32 data_len, __u32 srtt_us, __u32 rcv_wnd,
                                             __u32 snd_wnd, __u64 cookie)
{
    if (!data_len || !rt_port_wanted(lport))
        return 0;
    struct rt_sock_state *st = rt_sock_state_get(sk);
    if (!st)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    /* Fill the identity, or refresh it: some kernels (6.12) announce a child socket in
     * SYN_RECV while it still carries the listener's addresses (remote port 0). */
    if (!st->sock.lport || !st->sock.rport) {
        st->sock.lport = lport;
        st->sock.rport = rport;
        rt_sockaddr_to(st->sock.laddr, &st->sock.family, saddr);
        rt_sockaddr_to(st->sock.raddr, &st->sock.family, daddr);
    }
    if (!st->sock.cookie)
        st->sock.cookie = cookie;
    struct rt_cpu_state *c = rt_cpu();
    if (!(st->rx.flags & RT_RX_VALID)) {
        __builtin_memset(&st->rx, 0, sizeof(st->rx));
        st->rx.flags = RT_RX_VALID;
        st->rx.tcp_ts = now;
        __u32 here = bpf_get_smp_processor_id();
        st->rx.rx_cpu = here;
        if (!c || !c->in_net_rx) {
            /* Processed from the socket backlog after the socket's owner released it:
             * the packet may have been received by any CPU. */
            st->rx.flags |= RT_RX_PROCESS_CONTEXT;
            for (__u32 cpu = 0; cpu < RT_NR_CPUS; cpu++) {
                if (rt_claim_packet(cpu, skb, now, &st->rx))
                    break;
            }
        } else {
            rt_claim_packet(here, skb, now, &st->rx);
        }
    }
    st->rx.last_tcp_ts = now;
    st->rx.segments += 1;
    st->rx.bytes += data_len;
    st->rx.srtt_us = srtt_us;
    st->rx.rcv_wnd = rcv_wnd;
    st->rx.snd_wnd = snd_wnd;
    if (c)
        c->last_sk = sk;
    return 0;
}

static __always_inline int rt_on_data_ready(__u64 sk)
{
    struct rt_sock_state *st = sock_state.lookup(&sk);
    if (st && (st->rx.flags & RT_RX_VALID) && !(st->rx.flags & RT_RX_DATA_READY)) {
        st->rx.data_ready_ts = bpf_ktime_get_ns();
        st->rx.flags |= RT_RX_DATA_READY;
    }
    return 0;
}

static __always_inline int rt_on_wakeup(__u32 tid)
{
    struct rt_thread_state *t = thread_state.lookup(&tid);
    if (t && t->in_epoll && !t->wakeup_ts) {
        t->wakeup_ts = bpf_ktime_get_ns();
        t->waker_cpu = bpf_get_smp_processor_id();
    }
    return 0;
}

/* ---- epoll ---------------------------------------------------------------------------- */

static __always_inline int rt_on_epoll_enter(void)
{
    struct rt_thread_state *t = rt_target_thread();
    if (!t)
        return 0;
    t->epoll_enter_ts = bpf_ktime_get_ns();
    t->in_epoll = 1;
    t->wakeup_ts = 0;
    return 0;
}

static __always_inline int rt_on_epoll_exit(long ret)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!rt_tgid_wanted(id >> 32))
        return 0;
    __u32 tid = (__u32)id;
    struct rt_thread_state *t = thread_state.lookup(&tid);
    if (!t || !t->in_epoll)
        return 0;
    t->epoll_exit_ts = bpf_ktime_get_ns();
    t->epoll_ready = ret;
    t->in_epoll = 0;
    return 0;
}

/* ---- syscalls on sockets -------------------------------------------------------------- */

static __always_inline int rt_on_io_enter(__u32 kind, __s32 fd, __u32 nr)
{
    struct rt_thread_state *t = rt_target_thread();
    if (!t)
        return 0;
    struct rt_syscall *sc = &t->sc;
    sc->enter_ts = bpf_ktime_get_ns();
    sc->fd = fd;
    sc->nr = nr;
    sc->kind = kind;
    sc->sk = 0;
    sc->sk_ret = 0;
    sc->xmit_first_ts = 0;
    sc->xmit_last_ts = 0;
    sc->xmit_count = 0;
    sc->xmit_bytes = 0;
    sc->xmit_rc = 0;
    sc->dev[0] = 0;
    return 0;
}

/* sock_recv_length / sock_send_length: which socket the syscall in flight used. */
static __always_inline int rt_on_sock_length(__u32 kind, __u64 sk, __s32 ret)
{
    struct rt_syscall *sc = rt_syscall_in_flight(kind);
    if (sc && !sc->sk) {
        sc->sk = sk;
        sc->sk_ret = ret;
    }
    return 0;
}

/* Returns the syscall in flight when this is its first transmit, so the adapter can fill
 * in the device name (when it can see it). */
static __always_inline struct rt_syscall *rt_on_xmit(__u32 len, __s32 rc)
{
    struct rt_syscall *sc = rt_syscall_in_flight(RT_IO_SEND);
    if (!sc)
        return NULL;
    struct rt_cpu_state *c = rt_cpu();
    if (c && c->in_net_rx)
        return NULL; /* softirq work that interrupted the syscall is not its transmit */
    __u64 now = bpf_ktime_get_ns();
    struct rt_syscall *first = NULL;
    if (!sc->xmit_first_ts) {
        sc->xmit_first_ts = now;
        first = sc;
    }
    sc->xmit_last_ts = now;
    sc->xmit_count += 1;
    sc->xmit_bytes += len;
    sc->xmit_rc = rc;
    return first;
}

static __always_inline int rt_emit_recv(struct rt_thread_state *t, struct rt_sock_state *st,
                                        __s32 ret, __u64 now)
{
    struct rt_syscall *sc = &t->sc;
    struct rt_recv *e = rt_reserve(sizeof(struct rt_recv), RT_REC_RECV);
    if (!e)
        return 0;
    rt_fill_head(&e->head, RT_REC_RECV, now);
    __builtin_memcpy(&e->sock, &st->sock, sizeof(e->sock));
    e->fd = sc->fd;
    e->ret = ret;
    e->enter_ts = sc->enter_ts;
    e->syscall = sc->nr;
    e->epoll_enter_ts = t->epoll_enter_ts;
    e->epoll_exit_ts = t->epoll_exit_ts;
    e->wakeup_ts = t->wakeup_ts;
    e->epoll_ready = t->epoll_ready;
    e->waker_cpu = t->waker_cpu;
    e->_pad = 0;
    if (st->rx.flags & RT_RX_VALID) {
        __builtin_memcpy(&e->rx, &st->rx, sizeof(e->rx));
        __builtin_memset(&st->rx, 0, sizeof(st->rx));
    } else {
        __builtin_memset(&e->rx, 0, sizeof(e->rx));
    }
    rt_submit(e);
    return 0;
}

static __always_inline int rt_emit_send(struct rt_syscall *sc, struct rt_sock_state *st,
                                        __s32 ret, __u64 now)
{
    struct rt_send *e = rt_reserve(sizeof(struct rt_send), RT_REC_SEND);
    if (!e)
        return 0;
    rt_fill_head(&e->head, RT_REC_SEND, now);
    __builtin_memcpy(&e->sock, &st->sock, sizeof(e->sock));
    e->fd = sc->fd;
    e->ret = ret;
    e->enter_ts = sc->enter_ts;
    e->xmit_first_ts = sc->xmit_first_ts;
    e->xmit_last_ts = sc->xmit_last_ts;
    e->xmit_count = sc->xmit_count;
    e->xmit_bytes = sc->xmit_bytes;
    e->xmit_rc = sc->xmit_rc;
    e->syscall = sc->nr;
    e->flags = sc->xmit_count ? RT_TX_XMIT_SEEN : 0;
    e->_pad = 0;
    rt_copy_dev(e->dev, sc->dev);
    rt_submit(e);
    return 0;
}

static __always_inline int rt_emit_accept(struct rt_syscall *sc, __s32 ret, __u64 now)
{
    struct rt_accept *e = rt_reserve(sizeof(struct rt_accept), RT_REC_ACCEPT);
    if (!e)
        return 0;
    rt_fill_head(&e->head, RT_REC_ACCEPT, now);
    e->fd = ret;
    e->listen_fd = sc->fd;
    e->enter_ts = sc->enter_ts;
    e->syscall = sc->nr;
    e->_pad = 0;
    rt_submit(e);
    return 0;
}

/*
 * A syscall of a server thread returned. Only useful outcomes become records: data read
 * (a recv that found nothing, -EAGAIN after an edge-triggered loop drained the socket,
 * says nothing about a request), any send result (a failed or short send is news), and
 * accepted connections.
 */
static __always_inline int rt_on_io_exit(long ret)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!rt_tgid_wanted(id >> 32))
        return 0;
    __u32 tid = (__u32)id;
    struct rt_thread_state *t = thread_state.lookup(&tid);
    if (!t || t->sc.kind == RT_IO_NONE)
        return 0;
    struct rt_syscall *sc = &t->sc;
    __u32 kind = sc->kind;
    sc->kind = RT_IO_NONE;
    __u64 now = bpf_ktime_get_ns();
    if (kind == RT_IO_ACCEPT) {
        if (ret >= 0)
            rt_emit_accept(sc, ret, now);
        return 0;
    }
    if (!sc->sk || (kind == RT_IO_RECV && ret <= 0))
        return 0;
    __u64 sk = sc->sk;
    struct rt_sock_state *st = sock_state.lookup(&sk);
    if (!st || !st->sock.lport)
        return 0;
    if (kind == RT_IO_RECV)
        rt_emit_recv(t, st, ret, now);
    else if (kind == RT_IO_SEND)
        rt_emit_send(sc, st, ret, now);
    return 0;
}

/* ---- connection life: state changes, retransmits, resets, drops ----------------------- */

static __always_inline void rt_sock_from_v4v6(struct rt_sock *s, __u64 sk, __u16 family,
                                              __u16 lport, __u16 rport, const __u8 *s4,
                                              const __u8 *d4, const __u8 *s6, const __u8 *d6)
{
    s->sk = sk;
    s->family = family;
    s->lport = lport;
    s->rport = rport;
    /* The addresses point into the tracepoint record: copy them with a helper. */
    if (family == RT_AF_INET6) {
        bpf_probe_read_kernel(s->laddr, 16, s6);
        bpf_probe_read_kernel(s->raddr, 16, d6);
    } else {
        bpf_probe_read_kernel(s->laddr, 4, s4);
        bpf_probe_read_kernel(s->raddr, 4, d4);
    }
}

static __always_inline int rt_on_state(__u64 sk, int oldstate, int newstate, __u16 family,
                                       __u16 lport, __u16 rport, const __u8 *s4,
                                       const __u8 *d4, const __u8 *s6, const __u8 *d6)
{
    if (newstate == RT_TCP_LISTEN || oldstate == RT_TCP_LISTEN && newstate == RT_TCP_CLOSE)
        return 0;
    if (!rt_port_wanted(lport))
        return 0;
    __u64 now = bpf_ktime_get_ns();
    if (newstate == RT_TCP_SYN_RECV) {
        struct rt_sock_state *st = rt_sock_state_get(sk);
        if (st) {
            st->syn_recv_ts = now;
            rt_sock_from_v4v6(&st->sock, sk, family, lport, rport, s4, d4, s6, d6);
        }
        return 0;
    }
    /* Emit: ESTABLISHED, the first step out of ESTABLISHED, and the final CLOSE. */
    if (newstate != RT_TCP_ESTABLISHED && oldstate != RT_TCP_ESTABLISHED &&
        newstate != RT_TCP_CLOSE)
        return 0;
    struct rt_state *e = rt_reserve(sizeof(struct rt_state), RT_REC_STATE);
    if (!e)
        return 0;
    rt_fill_head(&e->head, RT_REC_STATE, now);
    __builtin_memset(&e->sock, 0, sizeof(e->sock));
    rt_sock_from_v4v6(&e->sock, sk, family, lport, rport, s4, d4, s6, d6);
    e->oldstate = oldstate;
    e->newstate = newstate;
    e->syn_recv_ts = 0;
    struct rt_sock_state *st = sock_state.lookup(&sk);
    if (st) {
        e->sock.cookie = st->sock.cookie;
        if (newstate == RT_TCP_ESTABLISHED)
            e->syn_recv_ts = st->syn_recv_ts;
        /* At ESTABLISHED the addresses are final (see rt_on_tcp_segment). */
        if (!st->sock.lport || !st->sock.rport || newstate == RT_TCP_ESTABLISHED)
            rt_sock_from_v4v6(&st->sock, sk, family, lport, rport, s4, d4, s6, d6);
    }
    e->fd = rt_in_close_fd();
    e->_pad = 0;
    rt_submit(e);
    return 0;
}

static __always_inline int rt_on_retransmit(__u64 sk, int state, int err, __u16 family,
                                            __u16 lport, __u16 rport, const __u8 *s4,
                                            const __u8 *d4, const __u8 *s6, const __u8 *d6)
{
    if (!rt_port_wanted(lport))
        return 0;
    struct rt_retransmit *e = rt_reserve(sizeof(struct rt_retransmit), RT_REC_RETRANSMIT);
    if (!e)
        return 0;
    rt_fill_head(&e->head, RT_REC_RETRANSMIT, bpf_ktime_get_ns());
    __builtin_memset(&e->sock, 0, sizeof(e->sock));
    rt_sock_from_v4v6(&e->sock, sk, family, lport, rport, s4, d4, s6, d6);
    e->state = state;
    e->err = err;
    rt_submit(e);
    return 0;
}

/* A retransmit seen without the tracepoint's fields: identity from what we already know. */
static __always_inline int rt_on_retransmit_known(__u64 sk, int err)
{
    struct rt_sock_state *st = sock_state.lookup(&sk);
    if (!st || !st->sock.lport)
        return 0;
    struct rt_retransmit *e = rt_reserve(sizeof(struct rt_retransmit), RT_REC_RETRANSMIT);
    if (!e)
        return 0;
    rt_fill_head(&e->head, RT_REC_RETRANSMIT, bpf_ktime_get_ns());
    __builtin_memcpy(&e->sock, &st->sock, sizeof(e->sock));
    e->state = 0;
    e->err = err;
    rt_submit(e);
    return 0;
}

static __always_inline int rt_on_reset(__u64 sk, __u32 direction, int state, __u32 reason)
{
    struct rt_sock_state *st = sk ? sock_state.lookup(&sk) : NULL;
    if (!st || !st->sock.lport)
        return 0;
    struct rt_reset *e = rt_reserve(sizeof(struct rt_reset), RT_REC_RESET);
    if (!e)
        return 0;
    rt_fill_head(&e->head, RT_REC_RESET, bpf_ktime_get_ns());
    __builtin_memcpy(&e->sock, &st->sock, sizeof(e->sock));
    e->direction = direction;
    e->state = state;
    e->reason = reason;
    e->_pad = 0;
    rt_submit(e);
    return 0;
}

static __always_inline int rt_on_drop(__u64 sk, __u32 kind, __u32 reason, __u64 location,
                                      __s32 rmem_alloc, __s32 sk_rcvbuf)
{
    struct rt_sock_state *st = sk ? sock_state.lookup(&sk) : NULL;
    if (!st || !st->sock.lport)
        return 0;
    struct rt_drop *e = rt_reserve(sizeof(struct rt_drop), RT_REC_DROP);
    if (!e)
        return 0;
    rt_fill_head(&e->head, RT_REC_DROP, bpf_ktime_get_ns());
    __builtin_memcpy(&e->sock, &st->sock, sizeof(e->sock));
    e->location = location;
    e->kind = kind;
    e->reason = reason;
    e->rmem_alloc = rmem_alloc;
    e->sk_rcvbuf = sk_rcvbuf;
    rt_submit(e);
    return 0;
}

static __always_inline int rt_on_sock_destroy(__u64 sk)
{
    sock_state.delete(&sk);
    return 0;
}

#include "adapters_tracepoint.h"
#include "adapters_raw_tracepoint.h"
#include "adapters_function.h"
