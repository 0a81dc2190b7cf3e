/* rx_path.bpf.h: Receive path: hardirq, NET_RX softirq, NAPI poll, netif_rx /
 * netif_receive_skb, remembered per packet in the per-CPU rings. */
#ifndef RT_RX_PATH_BPF_H
#define RT_RX_PATH_BPF_H

/* ---- receive path: hardirq, NET_RX softirq, NAPI, netif_rx/receive -------------------- */

static __always_inline int rt_on_hardirq_entry(__u32 irq)
{
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
    c->in_hardirq = 1;
    c->hardirq_ts = bpf_ktime_get_ns();
    c->irq = irq;
    return 0;
}

static __always_inline int rt_on_hardirq_exit(void)
{
    struct rt_cpu_state *c = rt_cpu();
    if (c)
        c->in_hardirq = 0;
    return 0;
}

static __always_inline int rt_on_softirq_raise(__u32 vec)
{
    if (vec != RT_SOFTIRQ_NET_RX)
        return 0;
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
    if (!c->raise_ts)
        c->raise_ts = bpf_ktime_get_ns();
    if (c->in_hardirq && !c->raise_from_hardirq) {
        c->raise_from_hardirq = 1;
        c->raise_hardirq_ts = c->hardirq_ts;
        c->raise_irq = c->irq;
    }
    return 0;
}

static __always_inline int rt_on_softirq_entry(__u32 vec)
{
    if (vec != RT_SOFTIRQ_NET_RX)
        return 0;
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    c->softirq_entry_ts = now;
    c->poll_start_ts = now;
    c->in_net_rx = 1;
    c->in_driver_poll = 0;
    c->cur_raise_ts = c->raise_ts;
    c->cur_from_hardirq = c->raise_from_hardirq;
    c->cur_hardirq_ts = c->raise_hardirq_ts;
    c->cur_irq = c->raise_irq;
    c->raise_ts = 0;
    c->raise_from_hardirq = 0;
    c->raise_hardirq_ts = 0;
    return 0;
}

static __always_inline int rt_on_softirq_exit(__u32 vec)
{
    if (vec != RT_SOFTIRQ_NET_RX)
        return 0;
    struct rt_cpu_state *c = rt_cpu();
    if (c)
        c->in_net_rx = 0;
    return 0;
}

/* A NAPI poll ended: the next one on this CPU starts now. */
static __always_inline int rt_on_napi_poll_end(void)
{
    struct rt_cpu_state *c = rt_cpu();
    if (c) {
        c->poll_start_ts = bpf_ktime_get_ns();
        c->in_driver_poll = 0;
    }
    return 0;
}

/* A driver's poll function started (fentry/kprobe on the NIC driver point): the packets
 * it hands to the stack until this NAPI poll ends are marked RT_RX_DRIVER_POLL. */
static __always_inline int rt_on_driver_poll_start(void)
{
    struct rt_cpu_state *c = rt_cpu();
    if (c) {
        c->poll_start_ts = bpf_ktime_get_ns();
        c->in_driver_poll = c->in_net_rx;
    }
    return 0;
}

/*
 * skb addresses are reused all the time (the kernel recycles skb memory), and not every
 * remembered packet is claimed (pure ACKs never reach the socket code that claims them),
 * so a stale entry could match a new packet at the same address. Every write therefore
 * evicts older entries for the same address first, and claims refuse entries older than
 * RT_PACKET_MAX_AGE_NS.
 */
#define RT_PACKET_MAX_AGE_NS 1000000000ULL

static __always_inline int rt_on_netif_rx(__u64 skb)
{
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return 0;
#pragma unroll
    for (int i = 0; i < RT_PACKET_RING; i++) {
        if (c->queued[i].skb == skb)
            c->queued[i].skb = 0;
    }
    __u32 slot = c->queued_next & (RT_PACKET_RING - 1);
    c->queued_next = slot + 1;
    c->queued[slot].skb = skb;
    c->queued[slot].ts = bpf_ktime_get_ns();
    return 0;
}

/* Remember the packet for TCP; returns its slot so the adapter can add the device name. */
static __always_inline struct rt_packet *rt_on_netif_receive(__u64 skb)
{
    struct rt_cpu_state *c = rt_cpu();
    if (!c)
        return NULL;
#pragma unroll
    for (int i = 0; i < RT_PACKET_RING; i++) {
        if (c->packets[i].skb == skb)
            c->packets[i].skb = 0;
    }
    __u32 slot = c->packet_next & (RT_PACKET_RING - 1);
    c->packet_next = slot + 1;
    struct rt_packet *p = &c->packets[slot];
    __u64 now = bpf_ktime_get_ns();
    p->skb = skb;
    p->netif_receive_ts = now;
    p->flags = RT_RX_SKB_SEEN;
    p->netif_rx_ts = 0;
    p->hardirq_ts = 0;
    p->irq = 0;
    p->dev[0] = 0;
    if (c->in_net_rx) {
        p->poll_start_ts = c->poll_start_ts;
        p->softirq_entry_ts = c->softirq_entry_ts;
        p->softirq_raise_ts = c->cur_raise_ts;
    } else {
        p->poll_start_ts = 0;
        p->softirq_entry_ts = 0;
        p->softirq_raise_ts = 0;
    }
#pragma unroll
    for (int i = 0; i < RT_PACKET_RING; i++) {
        if (c->queued[i].skb == skb) {
            if (now - c->queued[i].ts < RT_PACKET_MAX_AGE_NS) {
                p->netif_rx_ts = c->queued[i].ts;
                p->flags |= RT_RX_BACKLOG;
            }
            c->queued[i].skb = 0;
        }
    }
    /* A packet that came through netif_rx was sent by software on this host (lo, veth):
     * never blame a NIC interrupt for it, even if one raised the same softirq. */
    if (c->in_net_rx && c->in_driver_poll)
        p->flags |= RT_RX_DRIVER_POLL;
    if (c->in_net_rx && c->cur_from_hardirq && !(p->flags & RT_RX_BACKLOG)) {
        p->flags |= RT_RX_FROM_HARDIRQ;
        p->hardirq_ts = c->cur_hardirq_ts;
        p->irq = c->cur_irq;
    }
    return p;
}

/* Copy a remembered packet's receive path if `skb` is in CPU `cpu`'s ring. */
static __always_inline int rt_claim_packet(__u32 cpu, __u64 skb, __u64 now,
                                           struct rt_rx_path *rx)
{
    struct rt_cpu_state *c = cpu_state.lookup(&cpu);
    if (!c)
        return 0;
#pragma unroll
    for (int i = 0; i < RT_PACKET_RING; i++) {
        struct rt_packet *p = &c->packets[i];
        if (p->skb == skb && now - p->netif_receive_ts < RT_PACKET_MAX_AGE_NS) {
            rx->netif_rx_ts = p->netif_rx_ts;
            rx->netif_receive_ts = p->netif_receive_ts;
            rx->poll_start_ts = p->poll_start_ts;
            rx->softirq_entry_ts = p->softirq_entry_ts;
            rx->softirq_raise_ts = p->softirq_raise_ts;
            rx->hardirq_ts = p->hardirq_ts;
            rx->irq = p->irq;
            rx->rx_cpu = cpu;
            rx->flags |= p->flags;
            rt_copy_dev(rx->dev, p->dev);
            p->skb = 0;
            return 1;
        }
    }
    return 0;
}

#endif /* RT_RX_PATH_BPF_H */
