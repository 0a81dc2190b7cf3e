/*
 * fentry and kprobe adapters: kernel functions instead of tracepoints, for kernels that
 * lack a tracepoint we use. Both see the same function arguments; fentry is cheaper and is
 * preferred by the plan. Arguments are used as integers or opaque pointers only: no struct
 * field is read. Points that would need struct fields (hardirq number, tcp_probe's ports,
 * the woken pid, TCP state ports) have no function adapter.
 *
 * BCC (0.26) spells fentry/fexit as KFUNC_PROBE(fn, args...) / KRETFUNC_PROBE(fn, args...):
 * BPF_PROG underneath, so `ctx` is the u64 array of the function's arguments and an fexit
 * program finds the return value right after the LAST argument, ctx[<number of args>]
 * (not after the arguments it chose to declare). Where an fexit needs the return value,
 * the function's prototype is quoted next to it with its argument count.
 *
 * Exercised on a kernel that has kprobes and fentry by tests/test_function_adapters.py,
 * through scripts/kernel_vm.
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
/* A function's int return value, sign-extended (see the socket syscalls below). */
#define RT_RET_INT(value) ((long)(int)(value))

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
/* static int do_epoll_wait(int epfd, struct epoll_event __user *events, int maxevents,
 *                          struct timespec64 *timeout): 4 arguments, return value ctx[4] */
KFUNC_PROBE(do_epoll_wait) { return rt_on_epoll_enter(); }
KRETFUNC_PROBE(do_epoll_wait) { return rt_on_epoll_exit(RT_RET_INT(ctx[4])); }
#elif RT_EPOLL_WAIT == RT_MECH_KPROBE
int kprobe__do_epoll_wait(struct pt_regs *ctx) { return rt_on_epoll_enter(); }
int kretprobe__do_epoll_wait(struct pt_regs *ctx) { return rt_on_epoll_exit(RT_RET_INT(PT_REGS_RC(ctx))); }
#endif

/* ---- syscalls on sockets: fd from the syscall body, socket from tcp_recvmsg/sendmsg ------ */
/*
 * nargs: the function's argument count, so that ctx[nargs] is its return value.
 * Return values are taken as int, sign-extended: several of these functions return int,
 * whose upper 32 bits in the register (and so in ctx[] or pt_regs->ax) are undefined, so
 * -EAGAIN would read as 4294967285; the ssize_t/long ones never exceed MAX_RW_COUNT
 * (INT_MAX & PAGE_MASK), so nothing is lost for them.
 */
#define RT_FENTRY_IO(fn, kind, nr, nargs)                                                   \
    KFUNC_PROBE(fn) { return rt_on_io_enter(kind, (__s32)ctx[0], nr); }                     \
    KRETFUNC_PROBE(fn) { return rt_on_io_exit(RT_RET_INT(ctx[nargs])); }
#define RT_KPROBE_IO(fn, kind, nr, nargs)                                                   \
    int kprobe__##fn(struct pt_regs *ctx) { return rt_on_io_enter(kind, RT_ARG1(ctx), nr); } \
    int kretprobe__##fn(struct pt_regs *ctx) { return rt_on_io_exit(RT_RET_INT(PT_REGS_RC(ctx))); }

/*
 * int __sys_recvfrom(int fd, void __user *ubuf, size_t size, unsigned int flags,
 *                    struct sockaddr __user *addr, int __user *addr_len)            6 args
 * long __sys_recvmsg(int fd, struct user_msghdr __user *msg, unsigned int flags,
 *                    bool forbid_cmsg_compat)                                       4 args
 * ssize_t ksys_read(unsigned int fd, char __user *buf, size_t count)                3 args
 * int __sys_sendto(int fd, void __user *buff, size_t len, unsigned int flags,
 *                  struct sockaddr __user *addr, int addr_len)                      6 args
 * long __sys_sendmsg(int fd, struct user_msghdr __user *msg, unsigned int flags,
 *                    bool forbid_cmsg_compat)                                       4 args
 * ssize_t ksys_write(unsigned int fd, const char __user *buf, size_t count)         3 args
 * static ssize_t do_writev(unsigned long fd, const struct iovec __user *vec,
 *                          unsigned long vlen, rwf_t flags)                         4 args
 * int __sys_accept4(int fd, struct sockaddr __user *upeer_sockaddr,
 *                   int __user *upeer_addrlen, int flags)                           4 args
 */
/* recv and send: the second argument is the user buffer (recvmsg/sendmsg: struct
 * user_msghdr; do_writev: struct iovec[]), kept to capture a request's first bytes and its
 * response's status line (attach mode). */
#define RT_FENTRY_IO_BUF(fn, kind, nr, nargs)                                               \
    KFUNC_PROBE(fn) { return rt_on_io_enter_buf(kind, (__s32)ctx[0], nr, ctx[1]); }         \
    KRETFUNC_PROBE(fn) { return rt_on_io_exit(RT_RET_INT(ctx[nargs])); }
#define RT_KPROBE_IO_BUF(fn, kind, nr, nargs)                                               \
    int kprobe__##fn(struct pt_regs *ctx)                                                   \
    {                                                                                       \
        return rt_on_io_enter_buf(kind, RT_ARG1(ctx), nr, RT_ARG2(ctx));                    \
    }                                                                                       \
    int kretprobe__##fn(struct pt_regs *ctx) { return rt_on_io_exit(RT_RET_INT(PT_REGS_RC(ctx))); }

#if RT_SOCKET_RECV == RT_MECH_FENTRY
RT_FENTRY_IO_BUF(__sys_recvfrom, RT_IO_RECV, __NR_recvfrom, 6)
RT_FENTRY_IO_BUF(__sys_recvmsg, RT_IO_RECV, __NR_recvmsg, 4)
RT_FENTRY_IO_BUF(ksys_read, RT_IO_RECV, __NR_read, 3)
KFUNC_PROBE(tcp_recvmsg, struct sock *sk) { return rt_on_sock_length(RT_IO_RECV, (__u64)sk, 0); }
#elif RT_SOCKET_RECV == RT_MECH_KPROBE
RT_KPROBE_IO_BUF(__sys_recvfrom, RT_IO_RECV, __NR_recvfrom, 6)
RT_KPROBE_IO_BUF(__sys_recvmsg, RT_IO_RECV, __NR_recvmsg, 4)
RT_KPROBE_IO_BUF(ksys_read, RT_IO_RECV, __NR_read, 3)
int kprobe__tcp_recvmsg(struct pt_regs *ctx) { return rt_on_sock_length(RT_IO_RECV, RT_ARG1(ctx), 0); }
#endif

#if RT_SOCKET_SEND == RT_MECH_FENTRY
RT_FENTRY_IO_BUF(__sys_sendto, RT_IO_SEND, __NR_sendto, 6)
RT_FENTRY_IO_BUF(__sys_sendmsg, RT_IO_SEND, __NR_sendmsg, 4)
RT_FENTRY_IO_BUF(ksys_write, RT_IO_SEND, __NR_write, 3)
RT_FENTRY_IO_BUF(do_writev, RT_IO_SEND, __NR_writev, 4)
KFUNC_PROBE(tcp_sendmsg, struct sock *sk) { return rt_on_sock_length(RT_IO_SEND, (__u64)sk, 0); }
#elif RT_SOCKET_SEND == RT_MECH_KPROBE
RT_KPROBE_IO_BUF(__sys_sendto, RT_IO_SEND, __NR_sendto, 6)
RT_KPROBE_IO_BUF(__sys_sendmsg, RT_IO_SEND, __NR_sendmsg, 4)
RT_KPROBE_IO_BUF(ksys_write, RT_IO_SEND, __NR_write, 3)
RT_KPROBE_IO_BUF(do_writev, RT_IO_SEND, __NR_writev, 4)
int kprobe__tcp_sendmsg(struct pt_regs *ctx) { return rt_on_sock_length(RT_IO_SEND, RT_ARG1(ctx), 0); }
#endif

#if RT_ACCEPT == RT_MECH_FENTRY
RT_FENTRY_IO(__sys_accept4, RT_IO_ACCEPT, __NR_accept4, 4)
#elif RT_ACCEPT == RT_MECH_KPROBE
RT_KPROBE_IO(__sys_accept4, RT_IO_ACCEPT, __NR_accept4, 4)
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

/* tcp_v4_destroy_sock (IPv6 sockets too) is where tcp:tcp_destroy_sock fires: the socket's
 * state is forgotten when the kernel destroys it, after its final CLOSE, not at close(). */
#if RT_SOCKET_CLOSE == RT_MECH_FENTRY
KFUNC_PROBE(tcp_v4_destroy_sock, struct sock *sk) { return rt_on_sock_destroy((__u64)sk); }
#elif RT_SOCKET_CLOSE == RT_MECH_KPROBE
int kprobe__tcp_v4_destroy_sock(struct pt_regs *ctx) { return rt_on_sock_destroy(RT_ARG1(ctx)); }
#endif
