/*
 * fentry and kprobe adapters: kernel functions instead of tracepoints, for kernels that
 * lack a tracepoint we use. Both see the same function arguments; fentry is cheaper and is
 * preferred by the plan. Arguments are used as integers or opaque pointers only: no struct
 * field is read. Points that would need struct fields (hardirq number, tcp_probe's ports,
 * the woken pid, TCP state ports) have no function adapter.
 *
 * The NIC driver's poll function is chosen at run time (ethtool driver -> poll function),
 * so it arrives as X-macro lists: RT_DRIVER_POLL_FENTRY_LIST(X) / ..._KPROBE_LIST(X).
 */

struct sock;
struct sk_buff;
struct napi_struct;
struct net_device;
struct netdev_queue;

#define RT_ARG1(ctx) PT_REGS_PARM1(ctx)
#define RT_ARG2(ctx) PT_REGS_PARM2(ctx)
#define RT_ARG3(ctx) PT_REGS_PARM3(ctx)

/* ---- NET_RX softirq ------------------------------------------------------------------- */
#if RT_NET_RX_SOFTIRQ == RT_MECH_FENTRY
KFUNC_PROBE(net_rx_action) { return rt_on_softirq_entry(RT_SOFTIRQ_NET_RX); }
KRETFUNC_PROBE(net_rx_action) { return rt_on_softirq_exit(RT_SOFTIRQ_NET_RX); }
#elif RT_NET_RX_SOFTIRQ == RT_MECH_KPROBE
int kprobe__net_rx_action(struct pt_regs *ctx) { return rt_on_softirq_entry(RT_SOFTIRQ_NET_RX); }
int kretprobe__net_rx_action(struct pt_regs *ctx) { return rt_on_softirq_exit(RT_SOFTIRQ_NET_RX); }
#endif

/* ---- NAPI poll and the NIC driver's own poll function ---------------------------------- */
#if RT_NAPI_POLL == RT_MECH_FENTRY
KFUNC_PROBE(__napi_poll) { return rt_on_driver_poll_start(); }
#elif RT_NAPI_POLL == RT_MECH_KPROBE
int kprobe____napi_poll(struct pt_regs *ctx) { return rt_on_driver_poll_start(); }
#endif

#define RT_DRIVER_FENTRY(fn) KFUNC_PROBE(fn) { return rt_on_driver_poll_start(); }
#define RT_DRIVER_KPROBE(fn) int kprobe__##fn(struct pt_regs *ctx) { return rt_on_driver_poll_start(); }
#ifdef RT_DRIVER_POLL_FENTRY_LIST
RT_DRIVER_POLL_FENTRY_LIST(RT_DRIVER_FENTRY)
#endif
#ifdef RT_DRIVER_POLL_KPROBE_LIST
RT_DRIVER_POLL_KPROBE_LIST(RT_DRIVER_KPROBE)
#endif

/* ---- packet handed to the stack --------------------------------------------------------- */
#if RT_NETIF_RECEIVE == RT_MECH_FENTRY
KFUNC_PROBE(__netif_receive_skb, struct sk_buff *skb)
{
    rt_on_netif_receive((__u64)skb);
    return 0;
}
#elif RT_NETIF_RECEIVE == RT_MECH_KPROBE
int kprobe____netif_receive_skb(struct pt_regs *ctx)
{
    rt_on_netif_receive(RT_ARG1(ctx));
    return 0;
}
#endif

/* ---- socket data ready ------------------------------------------------------------------ */
#if RT_SOCKET_DATA_READY == RT_MECH_FENTRY
KFUNC_PROBE(sock_def_readable, struct sock *sk) { return rt_on_data_ready((__u64)sk); }
#elif RT_SOCKET_DATA_READY == RT_MECH_KPROBE
int kprobe__sock_def_readable(struct pt_regs *ctx) { return rt_on_data_ready(RT_ARG1(ctx)); }
#endif

/* ---- epoll ------------------------------------------------------------------------------ */
#if RT_EPOLL_WAIT == RT_MECH_FENTRY
KFUNC_PROBE(do_epoll_wait) { return rt_on_epoll_enter(); }
KRETFUNC_PROBE(do_epoll_wait, int epfd, void *events, int maxevents, void *to, int ret)
{
    return rt_on_epoll_exit(ret);
}
#elif RT_EPOLL_WAIT == RT_MECH_KPROBE
int kprobe__do_epoll_wait(struct pt_regs *ctx) { return rt_on_epoll_enter(); }
int kretprobe__do_epoll_wait(struct pt_regs *ctx) { return rt_on_epoll_exit(PT_REGS_RC(ctx)); }
#endif

/* ---- syscalls on sockets: fd from the syscall body, socket from tcp_recvmsg/sendmsg ------ */
#define RT_FENTRY_IO(fn, kind, nr)                                                          \
    KFUNC_PROBE(fn, int fd) { return rt_on_io_enter(kind, fd, nr); }                        \
    KRETFUNC_PROBE(fn, int fd, long ret) { return rt_on_io_exit(ret); }
#define RT_KPROBE_IO(fn, kind, nr)                                                          \
    int kprobe__##fn(struct pt_regs *ctx) { return rt_on_io_enter(kind, RT_ARG1(ctx), nr); } \
    int kretprobe__##fn(struct pt_regs *ctx) { return rt_on_io_exit(PT_REGS_RC(ctx)); }

#if RT_SOCKET_RECV == RT_MECH_FENTRY
RT_FENTRY_IO(__sys_recvfrom, RT_IO_RECV, __NR_recvfrom)
RT_FENTRY_IO(__sys_recvmsg, RT_IO_RECV, __NR_recvmsg)
RT_FENTRY_IO(ksys_read, RT_IO_RECV, __NR_read)
KFUNC_PROBE(tcp_recvmsg, struct sock *sk) { return rt_on_sock_length(RT_IO_RECV, (__u64)sk, 0); }
#elif RT_SOCKET_RECV == RT_MECH_KPROBE
RT_KPROBE_IO(__sys_recvfrom, RT_IO_RECV, __NR_recvfrom)
RT_KPROBE_IO(__sys_recvmsg, RT_IO_RECV, __NR_recvmsg)
RT_KPROBE_IO(ksys_read, RT_IO_RECV, __NR_read)
int kprobe__tcp_recvmsg(struct pt_regs *ctx) { return rt_on_sock_length(RT_IO_RECV, RT_ARG1(ctx), 0); }
#endif

#if RT_SOCKET_SEND == RT_MECH_FENTRY
RT_FENTRY_IO(__sys_sendto, RT_IO_SEND, __NR_sendto)
RT_FENTRY_IO(__sys_sendmsg, RT_IO_SEND, __NR_sendmsg)
RT_FENTRY_IO(ksys_write, RT_IO_SEND, __NR_write)
RT_FENTRY_IO(do_writev, RT_IO_SEND, __NR_writev)
KFUNC_PROBE(tcp_sendmsg, struct sock *sk) { return rt_on_sock_length(RT_IO_SEND, (__u64)sk, 0); }
#elif RT_SOCKET_SEND == RT_MECH_KPROBE
RT_KPROBE_IO(__sys_sendto, RT_IO_SEND, __NR_sendto)
RT_KPROBE_IO(__sys_sendmsg, RT_IO_SEND, __NR_sendmsg)
RT_KPROBE_IO(ksys_write, RT_IO_SEND, __NR_write)
RT_KPROBE_IO(do_writev, RT_IO_SEND, __NR_writev)
int kprobe__tcp_sendmsg(struct pt_regs *ctx) { return rt_on_sock_length(RT_IO_SEND, RT_ARG1(ctx), 0); }
#endif

#if RT_ACCEPT == RT_MECH_FENTRY
RT_FENTRY_IO(__sys_accept4, RT_IO_ACCEPT, __NR_accept4)
#elif RT_ACCEPT == RT_MECH_KPROBE
RT_KPROBE_IO(__sys_accept4, RT_IO_ACCEPT, __NR_accept4)
#endif

/* ---- device transmit: counts and times only (name and length live in struct fields) ----- */
#if RT_DEVICE_XMIT == RT_MECH_FENTRY
KFUNC_PROBE(dev_hard_start_xmit)
{
    rt_on_xmit(0, 0);
    return 0;
}
#elif RT_DEVICE_XMIT == RT_MECH_KPROBE
int kprobe__dev_hard_start_xmit(struct pt_regs *ctx)
{
    rt_on_xmit(0, 0);
    return 0;
}
#endif

/* ---- retransmits, resets, drops, close --------------------------------------------------- */
#if RT_TCP_RETRANSMIT == RT_MECH_FENTRY
KFUNC_PROBE(tcp_retransmit_skb, struct sock *sk) { return rt_on_retransmit_known((__u64)sk, 0); }
#elif RT_TCP_RETRANSMIT == RT_MECH_KPROBE
int kprobe__tcp_retransmit_skb(struct pt_regs *ctx) { return rt_on_retransmit_known(RT_ARG1(ctx), 0); }
#endif

#if RT_TCP_RESET == RT_MECH_FENTRY
KFUNC_PROBE(tcp_reset, struct sock *sk) { return rt_on_reset((__u64)sk, RT_RESET_RECEIVED, 0, 0); }
#elif RT_TCP_RESET == RT_MECH_KPROBE
int kprobe__tcp_reset(struct pt_regs *ctx) { return rt_on_reset(RT_ARG1(ctx), RT_RESET_RECEIVED, 0, 0); }
#endif

#if RT_RX_DROP == RT_MECH_FENTRY
KFUNC_PROBE(sk_skb_reason_drop, struct sock *sk, struct sk_buff *skb, int reason)
{
    return rt_on_drop((__u64)sk, RT_DROP_KFREE_SKB, reason, 0, 0, 0);
}
#elif RT_RX_DROP == RT_MECH_KPROBE
int kprobe__sk_skb_reason_drop(struct pt_regs *ctx)
{
    return rt_on_drop(RT_ARG1(ctx), RT_DROP_KFREE_SKB, RT_ARG3(ctx), 0, 0, 0);
}
#endif

#if RT_SOCKET_CLOSE == RT_MECH_FENTRY
KFUNC_PROBE(tcp_close, struct sock *sk) { return rt_on_sock_destroy((__u64)sk); }
#elif RT_SOCKET_CLOSE == RT_MECH_KPROBE
int kprobe__tcp_close(struct pt_regs *ctx) { return rt_on_sock_destroy(RT_ARG1(ctx)); }
#endif
