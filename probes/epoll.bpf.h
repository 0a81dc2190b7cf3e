/* epoll.bpf.h: epoll_wait enter/exit per thread: when the event loop slept and woke. */
#ifndef RT_EPOLL_BPF_H
#define RT_EPOLL_BPF_H

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

#endif /* RT_EPOLL_BPF_H */
