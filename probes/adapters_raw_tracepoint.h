/*
 * Raw tracepoint adapters: the fallback when a stable tracepoint is missing. A raw
 * tracepoint hands over the tracepoint's C arguments (TP_PROTO) instead of its record.
 * Only points whose arguments already carry what we need are adapted here: integers,
 * opaque pointers, and syscall arguments from struct pt_regs (the architecture's syscall
 * ABI, identical on every kernel). Points that would need struct fields (tcp_probe's ports,
 * sched_wakeup's pid, inet_sock_set_state's ports) have no raw adapter: the plan never
 * picks raw tracepoints for them.
 */

#if RT_NIC_IRQ == RT_MECH_RAW_TRACEPOINT
RAW_TRACEPOINT_PROBE(irq_handler_entry) { return rt_on_hardirq_entry((__u32)ctx->args[0]); }
RAW_TRACEPOINT_PROBE(irq_handler_exit) { return rt_on_hardirq_exit(); }
#endif

#if RT_NET_RX_SOFTIRQ == RT_MECH_RAW_TRACEPOINT
RAW_TRACEPOINT_PROBE(softirq_raise) { return rt_on_softirq_raise((__u32)ctx->args[0]); }
RAW_TRACEPOINT_PROBE(softirq_entry) { return rt_on_softirq_entry((__u32)ctx->args[0]); }
RAW_TRACEPOINT_PROBE(softirq_exit) { return rt_on_softirq_exit((__u32)ctx->args[0]); }
#endif

#if RT_NAPI_POLL == RT_MECH_RAW_TRACEPOINT
RAW_TRACEPOINT_PROBE(napi_poll) { return rt_on_napi_poll_end(); }
#endif

#if RT_NETIF_RECEIVE == RT_MECH_RAW_TRACEPOINT
RAW_TRACEPOINT_PROBE(netif_rx) { return rt_on_netif_rx(ctx->args[0]); }
RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
    rt_on_netif_receive(ctx->args[0]); /* no device name without reading struct net_device */
    return 0;
}
#endif

#if RT_SOCKET_DATA_READY == RT_MECH_RAW_TRACEPOINT
RAW_TRACEPOINT_PROBE(sk_data_ready) { return rt_on_data_ready(ctx->args[0]); }
#endif

#if RT_SOCKET_RECV == RT_MECH_RAW_TRACEPOINT
/* TP_PROTO(struct sock *sk, int ret, int flags) */
RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    return rt_on_sock_length(RT_IO_RECV, ctx->args[0], (__s32)ctx->args[1]);
}
#endif

#if RT_SOCKET_SEND == RT_MECH_RAW_TRACEPOINT
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    return rt_on_sock_length(RT_IO_SEND, ctx->args[0], (__s32)ctx->args[1]);
}
#endif

#if RT_DEVICE_XMIT == RT_MECH_RAW_TRACEPOINT
/* TP_PROTO(struct sk_buff *skb, int rc, struct net_device *dev, unsigned int skb_len) */
RAW_TRACEPOINT_PROBE(net_dev_xmit)
{
    rt_on_xmit((__u32)ctx->args[3], (__s32)ctx->args[1]);
    return 0;
}
#endif

#if RT_TCP_RETRANSMIT == RT_MECH_RAW_TRACEPOINT
/* TP_PROTO(const struct sock *sk, const struct sk_buff *skb[, int err]): err only since
 * 6.13, and a raw tracepoint program may not read past the arguments the kernel passes
 * (attaching fails), so only the first two are used. */
RAW_TRACEPOINT_PROBE(tcp_retransmit_skb) { return rt_on_retransmit_known(ctx->args[0], 0); }
#endif

#if RT_TCP_RESET == RT_MECH_RAW_TRACEPOINT
/* tcp_send_reset: TP_PROTO(const struct sock *sk, const struct sk_buff *skb, reason) */
RAW_TRACEPOINT_PROBE(tcp_send_reset)
{
    return rt_on_reset(ctx->args[0], RT_RESET_SENT, 0, (__u32)ctx->args[2]);
}
RAW_TRACEPOINT_PROBE(tcp_receive_reset) { return rt_on_reset(ctx->args[0], RT_RESET_RECEIVED, 0, 0); }
#endif

#if RT_RX_DROP == RT_MECH_RAW_TRACEPOINT
/* kfree_skb: TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason,
 *                     struct sock *rx_sk) */
RAW_TRACEPOINT_PROBE(kfree_skb)
{
    __u64 sk = ctx->args[3];
    if (!sk)
        return 0;
    return rt_on_drop(sk, RT_DROP_KFREE_SKB, (__u32)ctx->args[2], ctx->args[1], 0, 0);
}
/* sock_rcvqueue_full: TP_PROTO(struct sock *sk, struct sk_buff *skb) */
RAW_TRACEPOINT_PROBE(sock_rcvqueue_full)
{
    return rt_on_drop(ctx->args[0], RT_DROP_RCVQUEUE_FULL, 0, 0, 0, 0);
}
#endif

#if RT_SOCKET_CLOSE == RT_MECH_RAW_TRACEPOINT
RAW_TRACEPOINT_PROBE(tcp_destroy_sock) { return rt_on_sock_destroy(ctx->args[0]); }
#endif

/* ---- syscalls through raw_syscalls:sys_enter / sys_exit ------------------------------- */

#if RT_EPOLL_WAIT == RT_MECH_RAW_TRACEPOINT || RT_SOCKET_RECV == RT_MECH_RAW_TRACEPOINT ||    \
    RT_SOCKET_SEND == RT_MECH_RAW_TRACEPOINT || RT_ACCEPT == RT_MECH_RAW_TRACEPOINT ||         \
    RT_SOCKET_CLOSE == RT_MECH_RAW_TRACEPOINT

/* First syscall argument: struct pt_regs is the x86-64 syscall ABI, the same on every
 * kernel, so this read does not depend on the installed headers matching. */
static __always_inline __s32 rt_regs_fd(struct pt_regs *regs)
{
    unsigned long fd = 0;
    bpf_probe_read_kernel(&fd, sizeof(fd), &regs->di);
    return (__s32)fd;
}

/* Second syscall argument (the buffer), read only to capture a request's first bytes. */
static __always_inline __u64 rt_regs_arg2(struct pt_regs *regs)
{
    unsigned long arg = 0;
    bpf_probe_read_kernel(&arg, sizeof(arg), &regs->si);
    return arg;
}

RAW_TRACEPOINT_PROBE(sys_enter)
{
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    long id = (long)ctx->args[1];
    switch (id) {
#if RT_EPOLL_WAIT == RT_MECH_RAW_TRACEPOINT
    case __NR_epoll_wait:
    case __NR_epoll_pwait:
    case __NR_epoll_pwait2:
        return rt_on_epoll_enter();
#endif
#if RT_SOCKET_RECV == RT_MECH_RAW_TRACEPOINT
    case __NR_read:
    case __NR_recvfrom:
    case __NR_recvmsg:
        return rt_on_io_enter_buf(RT_IO_RECV, rt_regs_fd(regs), id,
                                  rt_capture_wanted() ? rt_regs_arg2(regs) : 0);
#endif
#if RT_SOCKET_SEND == RT_MECH_RAW_TRACEPOINT
    case __NR_write:
    case __NR_writev:
    case __NR_sendto:
    case __NR_sendmsg:
        return rt_on_io_enter_buf(RT_IO_SEND, rt_regs_fd(regs), id,
                                  rt_capture_wanted() ? rt_regs_arg2(regs) : 0);
#endif
#if RT_ACCEPT == RT_MECH_RAW_TRACEPOINT
    case __NR_accept:
    case __NR_accept4:
        return rt_on_io_enter(RT_IO_ACCEPT, rt_regs_fd(regs), id);
#endif
#if RT_SOCKET_CLOSE == RT_MECH_RAW_TRACEPOINT
    case __NR_close:
        return rt_on_io_enter(RT_IO_CLOSE, rt_regs_fd(regs), id);
#endif
    default:
        return 0;
    }
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    long ret = (long)ctx->args[1];
#if RT_EPOLL_WAIT == RT_MECH_RAW_TRACEPOINT
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    unsigned long id = 0;
    bpf_probe_read_kernel(&id, sizeof(id), &regs->orig_ax);
    if (id == __NR_epoll_wait || id == __NR_epoll_pwait || id == __NR_epoll_pwait2)
        return rt_on_epoll_exit(ret);
#endif
    /* Only syscalls whose enter we recorded have state to finish. */
    return rt_on_io_exit(ret);
}
#endif
