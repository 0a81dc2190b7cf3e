/* state.bpf.h: Compile-time constants, the state kept between events (per CPU, socket,
 * thread) and the maps that hold it, with the ring buffer and the lost-record counters. */
#ifndef RT_STATE_BPF_H
#define RT_STATE_BPF_H

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
    __u32 in_driver_poll;    /* the NIC driver's own poll function is running (fentry/kprobe) */
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
    /* RT_CFG_CAPTURE_HEAD: 1 from a request's first recv (its bytes captured) to its response's
     * first send (its status line captured), then 0 again. */
    __u32 in_request;
    __u32 _pad;
};

/* The syscall a server thread has in flight (one at a time per thread). */
struct rt_syscall {
    __u64 enter_ts;
    __u64 sk;
    __u64 buf; /* the user buffer (recvmsg/sendmsg: struct user_msghdr; writev: struct iovec[]) */
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

#endif /* RT_STATE_BPF_H */
