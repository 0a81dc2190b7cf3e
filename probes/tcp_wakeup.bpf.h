/* tcp_wakeup.bpf.h: TCP receive (tcp_probe), data ready (sk_data_ready) and the wakeup of
 * the server thread. */
#ifndef RT_TCP_WAKEUP_BPF_H
#define RT_TCP_WAKEUP_BPF_H

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

#endif /* RT_TCP_WAKEUP_BPF_H */
