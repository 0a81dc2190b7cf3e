/* connection.bpf.h: Connection life: TCP state changes, retransmits, resets, drops. */
#ifndef RT_CONNECTION_BPF_H
#define RT_CONNECTION_BPF_H

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

#endif /* RT_CONNECTION_BPF_H */
