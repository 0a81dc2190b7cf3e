/* syscalls.bpf.h: Syscalls on sockets: recv/send/accept/close enter and exit, emitted at
 * exit as one record each; with RT_CFG_CAPTURE_HEAD a request's first recv also carries its
 * first bytes (RT_REC_RECV_HEAD) and its response's first send its status line
 * (RT_REC_SEND_HEAD). */
#ifndef RT_SYSCALLS_BPF_H
#define RT_SYSCALLS_BPF_H

/* ---- syscalls on sockets -------------------------------------------------------------- */

/* `buf`: the syscall's user buffer (recvmsg/sendmsg: its struct user_msghdr; writev: its
 * iovec array), kept to capture a request's first bytes and its response's status line at
 * exit; adapters pass it only when RT_CFG_CAPTURE_HEAD is set or when it costs nothing to
 * read (a tracepoint field). */
static __always_inline int rt_on_io_enter_buf(__u32 kind, __s32 fd, __u32 nr, __u64 buf)
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
    sc->buf = buf;
    sc->sk_ret = 0;
    sc->xmit_first_ts = 0;
    sc->xmit_last_ts = 0;
    sc->xmit_count = 0;
    sc->xmit_bytes = 0;
    sc->xmit_rc = 0;
    sc->dev[0] = 0;
    return 0;
}

static __always_inline int rt_on_io_enter(__u32 kind, __s32 fd, __u32 nr)
{
    return rt_on_io_enter_buf(kind, fd, nr, 0);
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

static __always_inline void rt_fill_recv(struct rt_recv *e, struct rt_thread_state *t,
                                         struct rt_sock_state *st, __s32 ret, __u64 now,
                                         __u32 type)
{
    struct rt_syscall *sc = &t->sc;
    rt_fill_head(&e->head, type, now);
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
}

static __always_inline int rt_emit_recv(struct rt_thread_state *t, struct rt_sock_state *st,
                                        __s32 ret, __u64 now)
{
    struct rt_recv *e = rt_reserve(sizeof(struct rt_recv), RT_REC_RECV);
    if (!e)
        return 0;
    rt_fill_recv(e, t, st, ret, now, RT_REC_RECV);
    rt_submit(e);
    return 0;
}

/* The bytes a syscall read or wrote start at `buf`, or (recvmsg, sendmsg, writev) at the first
 * iovec it points to: returns that start, and narrows *len to the first iovec's length. The
 * layouts are the x86-64 syscall ABI (struct user_msghdr: msg_iov at offset 16; struct iovec:
 * base at 0, length at 8), the same for every kernel: user memory, not a kernel struct. */
static __always_inline __u64 rt_user_bytes(__u64 buf, __u32 nr, __u64 *len)
{
    __u64 iov = buf;
    if (nr == __NR_recvmsg || nr == __NR_sendmsg) {
        iov = 0;
        if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(buf + 16)) || !iov)
            return 0;
    } else if (nr != __NR_writev) {
        return buf;
    }
    __u64 pair[2] = {};
    if (bpf_probe_read_user(pair, sizeof(pair), (void *)iov))
        return 0;
    if (pair[1] < *len)
        *len = pair[1];
    return pair[0];
}

/* The first read of a request (RT_CFG_CAPTURE_HEAD): the recv record plus its first bytes,
 * copied from the server's buffer now that the syscall has filled it. */
static __always_inline int rt_emit_recv_head(struct rt_thread_state *t,
                                             struct rt_sock_state *st, __s32 ret, __u64 now)
{
    struct rt_syscall *sc = &t->sc;
    struct rt_recv_head *e = rt_reserve(sizeof(struct rt_recv_head), RT_REC_RECV_HEAD);
    if (!e)
        return 0;
    rt_fill_recv(&e->recv, t, st, ret, now, RT_REC_RECV_HEAD);
    __u64 n64 = (__u64)ret;
    __u64 buf = sc->buf ? rt_user_bytes(sc->buf, sc->nr, &n64) : 0;
    __u32 n = n64 < RT_HEAD_BYTES ? (__u32)n64 : RT_HEAD_BYTES;
    e->head_len = 0;
    e->_pad = 0;
    if (buf && n > 0 && n <= RT_HEAD_BYTES && bpf_probe_read_user(e->data, n, (void *)buf) == 0)
        e->head_len = n;
    rt_submit(e);
    return 0;
}

static __always_inline void rt_fill_send(struct rt_send *e, struct rt_syscall *sc,
                                         struct rt_sock_state *st, __s32 ret, __u64 now,
                                         __u32 type)
{
    rt_fill_head(&e->head, type, now);
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
}

static __always_inline int rt_emit_send(struct rt_syscall *sc, struct rt_sock_state *st,
                                        __s32 ret, __u64 now)
{
    struct rt_send *e = rt_reserve(sizeof(struct rt_send), RT_REC_SEND);
    if (!e)
        return 0;
    rt_fill_send(e, sc, st, ret, now, RT_REC_SEND);
    rt_submit(e);
    return 0;
}

/* The first send of a response (RT_CFG_CAPTURE_HEAD): the send record plus its status line. */
static __always_inline int rt_emit_send_head(struct rt_syscall *sc, struct rt_sock_state *st,
                                             __s32 ret, __u64 now)
{
    struct rt_send_head *e = rt_reserve(sizeof(struct rt_send_head), RT_REC_SEND_HEAD);
    if (!e)
        return 0;
    rt_fill_send(&e->send, sc, st, ret, now, RT_REC_SEND_HEAD);
    __u64 n64 = (__u64)ret;
    __u64 buf = sc->buf ? rt_user_bytes(sc->buf, sc->nr, &n64) : 0;
    __u32 n = n64 < RT_STATUS_BYTES ? (__u32)n64 : RT_STATUS_BYTES;
    e->head_len = 0;
    e->_pad = 0;
    if (buf && n > 0 && n <= RT_STATUS_BYTES &&
        bpf_probe_read_user(e->data, n, (void *)buf) == 0)
        e->head_len = n;
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
    if (kind == RT_IO_RECV) {
        /* The first read with data since the socket's last send starts a request. */
        if (!st->in_request && rt_capture_wanted()) {
            st->in_request = 1;
            rt_emit_recv_head(t, st, ret, now);
        } else {
            rt_emit_recv(t, st, ret, now);
        }
    } else if (kind == RT_IO_SEND) {
        /* ... and the first send with data after that starts its response. */
        if (st->in_request && ret > 0) {
            st->in_request = 0;
            rt_emit_send_head(sc, st, ret, now);
        } else {
            rt_emit_send(sc, st, ret, now);
        }
    }
    return 0;
}

#endif /* RT_SYSCALLS_BPF_H */
