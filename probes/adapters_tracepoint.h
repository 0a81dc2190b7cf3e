/*
 * Tracepoint adapters: the preferred strategy for every probe point. Fields come from the
 * tracepoints' own records, whose layout BCC reads from tracefs at compile time, so they
 * are right on any kernel whatever headers are installed.
 *
 * Included by reqtrace.bpf.c; each block is compiled only when the plan chose tracepoints
 * for that point (RT_<POINT> == RT_MECH_TRACEPOINT).
 */

#if RT_NIC_IRQ == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(irq, irq_handler_entry) { return rt_on_hardirq_entry(args->irq); }
TRACEPOINT_PROBE(irq, irq_handler_exit) { return rt_on_hardirq_exit(); }
#endif

#if RT_NET_RX_SOFTIRQ == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(irq, softirq_raise) { return rt_on_softirq_raise(args->vec); }
TRACEPOINT_PROBE(irq, softirq_entry) { return rt_on_softirq_entry(args->vec); }
TRACEPOINT_PROBE(irq, softirq_exit) { return rt_on_softirq_exit(args->vec); }
#endif

#if RT_NAPI_POLL == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(napi, napi_poll) { return rt_on_napi_poll_end(); }
#endif

#if RT_NETIF_RECEIVE == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(net, netif_rx) { return rt_on_netif_rx((__u64)args->skbaddr); }
TRACEPOINT_PROBE(net, netif_receive_skb)
{
    struct rt_packet *p = rt_on_netif_receive((__u64)args->skbaddr);
    if (p)
        TP_DATA_LOC_READ_CONST(p->dev, name, RT_IFNAMSIZ);
    return 0;
}
#endif

#if RT_TCP_RECEIVE == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(tcp, tcp_probe)
{
    return rt_on_tcp_segment((__u64)args->skaddr, (__u64)args->skbaddr, args->sport,
                             args->dport, args->saddr, args->daddr, args->data_len, args->srtt,
                             args->rcv_wnd, args->snd_wnd, args->sock_cookie);
}
#endif

#if RT_SOCKET_DATA_READY == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(sock, sk_data_ready) { return rt_on_data_ready((__u64)args->skaddr); }
#endif

#if RT_THREAD_WAKEUP == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(sched, sched_wakeup) { return rt_on_wakeup(args->pid); }
#endif

#if RT_EPOLL_WAIT == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(syscalls, sys_enter_epoll_wait) { return rt_on_epoll_enter(); }
TRACEPOINT_PROBE(syscalls, sys_exit_epoll_wait) { return rt_on_epoll_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_epoll_pwait) { return rt_on_epoll_enter(); }
TRACEPOINT_PROBE(syscalls, sys_exit_epoll_pwait) { return rt_on_epoll_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_epoll_pwait2) { return rt_on_epoll_enter(); }
TRACEPOINT_PROBE(syscalls, sys_exit_epoll_pwait2) { return rt_on_epoll_exit(args->ret); }
#endif

#define RT_TP_IO(name, kind)                                                                \
    TRACEPOINT_PROBE(syscalls, sys_enter_##name)                                            \
    {                                                                                       \
        return rt_on_io_enter(kind, (__s32)args->fd, args->__syscall_nr);                   \
    }                                                                                       \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) { return rt_on_io_exit(args->ret); }

/* recv and send: the user buffer is a field of the record (free to read), kept for the
 * capture of a request's first bytes and its response's status line (attach mode). */
#define RT_TP_IO_BUF(name, kind, buf)                                                      \
    TRACEPOINT_PROBE(syscalls, sys_enter_##name)                                            \
    {                                                                                       \
        return rt_on_io_enter_buf(kind, (__s32)args->fd, args->__syscall_nr,                \
                                  (__u64)args->buf);                                        \
    }                                                                                       \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) { return rt_on_io_exit(args->ret); }

#if RT_SOCKET_RECV == RT_MECH_TRACEPOINT
RT_TP_IO_BUF(recvfrom, RT_IO_RECV, ubuf)
RT_TP_IO_BUF(recvmsg, RT_IO_RECV, msg)
RT_TP_IO_BUF(read, RT_IO_RECV, buf)
TRACEPOINT_PROBE(sock, sock_recv_length)
{
    return rt_on_sock_length(RT_IO_RECV, (__u64)args->sk, args->ret);
}
#endif

#if RT_SOCKET_SEND == RT_MECH_TRACEPOINT
RT_TP_IO_BUF(sendto, RT_IO_SEND, buff)
RT_TP_IO_BUF(sendmsg, RT_IO_SEND, msg)
RT_TP_IO_BUF(write, RT_IO_SEND, buf)
RT_TP_IO_BUF(writev, RT_IO_SEND, vec)
TRACEPOINT_PROBE(sock, sock_send_length)
{
    return rt_on_sock_length(RT_IO_SEND, (__u64)args->sk, args->ret);
}
#endif

#if RT_ACCEPT == RT_MECH_TRACEPOINT
RT_TP_IO(accept4, RT_IO_ACCEPT)
RT_TP_IO(accept, RT_IO_ACCEPT)
#endif

#if RT_SOCKET_CLOSE == RT_MECH_TRACEPOINT
RT_TP_IO(close, RT_IO_CLOSE)
TRACEPOINT_PROBE(tcp, tcp_destroy_sock) { return rt_on_sock_destroy((__u64)args->skaddr); }
#endif

#if RT_DEVICE_XMIT == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(net, net_dev_xmit)
{
    struct rt_syscall *sc = rt_on_xmit(args->len, args->rc);
    if (sc)
        TP_DATA_LOC_READ_CONST(sc->dev, name, RT_IFNAMSIZ);
    return 0;
}
#endif

#if RT_TCP_STATE == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != RT_IPPROTO_TCP)
        return 0;
    return rt_on_state((__u64)args->skaddr, args->oldstate, args->newstate, args->family,
                       args->sport, args->dport, args->saddr, args->daddr, args->saddr_v6,
                       args->daddr_v6);
}
#endif

#if RT_TCP_RETRANSMIT == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
#ifdef RT_HAS_TCP_RETRANSMIT_SKB_ERR
    int err = args->err; /* 6.13+ */
#else
    int err = 0;
#endif
    return rt_on_retransmit((__u64)args->skaddr, args->state, err, args->family, args->sport,
                            args->dport, args->saddr, args->daddr, args->saddr_v6,
                            args->daddr_v6);
}
#endif

#if RT_TCP_RESET == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
    return rt_on_reset((__u64)args->skaddr, RT_RESET_SENT, args->state, args->reason);
}
TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
    return rt_on_reset((__u64)args->skaddr, RT_RESET_RECEIVED, 0, 0);
}
#endif

#if RT_RX_DROP == RT_MECH_TRACEPOINT
TRACEPOINT_PROBE(skb, kfree_skb)
{
    __u64 sk = (__u64)args->rx_sk;
    if (!sk)
        return 0;
    return rt_on_drop(sk, RT_DROP_KFREE_SKB, args->reason, (__u64)args->location, 0, 0);
}
TRACEPOINT_PROBE(sock, sock_rcvqueue_full)
{
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
    return rt_on_drop(c->last_sk, RT_DROP_RCVQUEUE_FULL, 0, 0, args->rmem_alloc,
                      args->sk_rcvbuf);
}
#endif
