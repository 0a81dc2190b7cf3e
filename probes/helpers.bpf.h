/* helpers.bpf.h: Helpers shared by every concern: config and filters, socket identity,
 * record submission (no-wakeup submits, a wakeup every Nth), lost-record counting. */
#ifndef RT_HELPERS_BPF_H
#define RT_HELPERS_BPF_H

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

/* Whether the first bytes of each request are copied (RT_CFG_CAPTURE_HEAD, attach mode). */
static __always_inline int rt_capture_wanted(void)
{
    struct rt_config *cfg = rt_config();
    return cfg && (cfg->flags & RT_CFG_CAPTURE_HEAD);
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

#endif /* RT_HELPERS_BPF_H */
