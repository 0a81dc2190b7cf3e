/*
 * probes/events.h: the one definition of every record reqtrace's BPF programs emit.
 *
 * The Python mirror lives in tracer/records/kernel.py; tests/test_records_layout.py compiles this
 * header with BCC and checks that every size and offset matches the mirror.
 *
 * Theory of operation: the kernel side joins raw events in BPF maps and emits few, rich
 * records. A request on a keep-alive connection costs two records (one RT_REC_RECV carrying
 * the whole receive path that delivered its bytes, one RT_REC_SEND carrying the device
 * transmits inside the send syscall); a new connection adds an accept and a few state
 * records. All timestamps are bpf_ktime_get_ns() = CLOCK_MONOTONIC; 0 means "not observed".
 * With RT_CFG_CAPTURE_HEAD (`reqtrace attach`: no server hooks say what the request was), the
 * first recv with data after a send (or on a new socket) is an RT_REC_RECV_HEAD instead: the
 * same record plus the first RT_HEAD_BYTES bytes it read; and the first send after that is
 * an RT_REC_SEND_HEAD, plus the first RT_STATUS_BYTES bytes it wrote (the status line). The
 * cost is per request, not per syscall, and nothing at all without the flag.
 *
 * Layout rules: fixed-size fields only, natural alignment, explicit padding, little-endian
 * host order for integers. Kernel pointers (sk, skb) are opaque ids, never dereferenced.
 */
#ifndef REQTRACE_EVENTS_H
#define REQTRACE_EVENTS_H

#define RT_IFNAMSIZ 16
#define RT_ADDR_LEN 16

enum rt_record_type {
    RT_REC_RECV = 1,       /* recv-family syscall returned on a tracked socket */
    RT_REC_SEND = 2,       /* send-family syscall on a tracked socket */
    RT_REC_ACCEPT = 3,     /* accept4/accept returned in the server */
    RT_REC_STATE = 4,      /* TCP state change of a socket on a tracked port */
    RT_REC_RETRANSMIT = 5, /* TCP retransmit on a tracked socket */
    RT_REC_RESET = 6,      /* TCP reset sent or received on a tracked socket */
    RT_REC_DROP = 7,       /* packet for a tracked socket dropped on receive */
    RT_REC_RECV_HEAD = 8,  /* an RT_REC_RECV that also carries the request's first bytes */
    RT_REC_SEND_HEAD = 9,  /* an RT_REC_SEND that also carries the response's first bytes */
    RT_REC_TYPES = 10      /* size of the per-type counters */
};

/* rt_rx_path.flags */
#define RT_RX_VALID (1u << 0)          /* at least one data segment arrived since the last recv */
#define RT_RX_FROM_HARDIRQ (1u << 1)   /* NET_RX was raised inside a hardirq (a NIC interrupt) */
#define RT_RX_BACKLOG (1u << 2)        /* the packet was queued with netif_rx (lo, veth) */
#define RT_RX_SKB_SEEN (1u << 3)       /* netif_receive_skb was seen for the first segment */
#define RT_RX_PROCESS_CONTEXT (1u << 4) /* TCP processed it from the socket backlog, later */
#define RT_RX_DATA_READY (1u << 5)     /* sk_data_ready fired after the first segment */
#define RT_RX_DRIVER_POLL (1u << 6)    /* delivered inside the NIC driver's poll function */

/* rt_send.flags */
#define RT_TX_XMIT_SEEN (1u << 0) /* a net_dev_xmit happened inside the syscall */

/* rt_reset.direction */
#define RT_RESET_SENT 0
#define RT_RESET_RECEIVED 1

/* rt_drop.kind */
#define RT_DROP_KFREE_SKB 0       /* skb:kfree_skb with the socket as rx_sk */
#define RT_DROP_RCVQUEUE_FULL 1   /* sock:sock_rcvqueue_full on the CPU that last served it */

/* How a probe point is attached: the loader defines RT_<POINT> to one of these. */
#define RT_MECH_TRACEPOINT 1
#define RT_MECH_RAW_TRACEPOINT 2
#define RT_MECH_FENTRY 3
#define RT_MECH_KPROBE 4

/* rt_config.flags */
#define RT_CFG_FILTER_TGID (1u << 0) /* syscalls only from rt_config.tgids */
#define RT_CFG_FILTER_PORT (1u << 1) /* sockets only on rt_config.ports (local port) */
#define RT_CFG_ENABLED (1u << 2)     /* off until the loader has written the filters */
#define RT_CFG_CAPTURE_HEAD (1u << 3) /* copy the first bytes of each request (RT_REC_RECV_HEAD) */

struct rt_head {
    __u64 ts_ns; /* when the record was emitted */
    __u32 type;  /* enum rt_record_type */
    __u32 cpu;
    __u32 tgid; /* process; for records emitted in softirq, whoever was interrupted */
    __u32 tid;
};

/* The identity of a TCP socket, as seen from the server side. */
struct rt_sock {
    __u64 sk;     /* address of struct sock: an opaque id, never dereferenced */
    __u64 cookie; /* socket cookie (tcp_probe), 0 until known */
    __u8 laddr[RT_ADDR_LEN]; /* local address: IPv4 in the first 4 bytes, or IPv6 */
    __u8 raddr[RT_ADDR_LEN];
    __u16 lport; /* host byte order */
    __u16 rport;
    __u16 family; /* AF_INET (2) or AF_INET6 (10); 0 when unknown */
    __u16 _pad;
};

/*
 * The receive path of the first data segment that arrived since the previous recv on the
 * socket, plus totals over all segments since then.
 */
struct rt_rx_path {
    __u64 hardirq_ts;       /* NIC hardirq that raised this NET_RX softirq (0: none) */
    __u64 softirq_raise_ts; /* NET_RX raised */
    __u64 softirq_entry_ts; /* NET_RX softirq started on rx_cpu */
    __u64 poll_start_ts;    /* the NAPI poll that delivered it started */
    __u64 netif_rx_ts;      /* queued on the backlog by netif_rx (lo, veth) */
    __u64 netif_receive_ts; /* netif_receive_skb: handed to the protocol stack */
    __u64 tcp_ts;           /* first segment at tcp:tcp_probe */
    __u64 last_tcp_ts;      /* last segment at tcp:tcp_probe */
    __u64 data_ready_ts;    /* sk_data_ready after the first segment */
    __u32 segments;         /* data segments since the previous recv */
    __u32 bytes;            /* their payload bytes */
    __u32 irq;              /* irq number of hardirq_ts */
    __u32 rx_cpu;           /* CPU that ran the receive */
    __u32 srtt_us;          /* smoothed RTT at the last segment */
    __u32 rcv_wnd;          /* receive window at the last segment */
    __u32 snd_wnd;          /* send window at the last segment */
    __u32 flags;            /* RT_RX_* */
    char dev[RT_IFNAMSIZ];  /* device of netif_receive_skb ("" if unseen) */
};

struct rt_recv {
    struct rt_head head; /* ts_ns = syscall exit */
    struct rt_sock sock;
    __s32 fd;
    __s32 ret;              /* bytes returned, or -errno */
    __u64 enter_ts;         /* syscall enter */
    __u64 epoll_enter_ts;   /* this thread's last epoll wait before the recv */
    __u64 epoll_exit_ts;
    __u64 wakeup_ts;        /* sched_wakeup of this thread during that wait (0: no sleep) */
    __s32 epoll_ready;      /* events that wait returned */
    __u32 syscall;          /* syscall number (read, recvfrom, recvmsg) */
    __u32 waker_cpu;        /* CPU that issued the wakeup */
    __u32 _pad;
    struct rt_rx_path rx;
};

/* The first recv of a request (the first with data since the socket's last send) when
 * RT_CFG_CAPTURE_HEAD is set: the request line and the start of the headers, read from the
 * server's own buffer at syscall exit (read, recvfrom; recvmsg: its first iovec). */
#define RT_HEAD_BYTES 96

struct rt_recv_head {
    struct rt_recv recv; /* recv.head.type = RT_REC_RECV_HEAD */
    __u32 head_len;      /* bytes copied into data: min(ret, RT_HEAD_BYTES), 0 if unreadable */
    __u32 _pad;
    char data[RT_HEAD_BYTES];
};

/* The first send of a response (after a request's first recv) when RT_CFG_CAPTURE_HEAD is
 * set: its status line (write, sendto; writev, sendmsg: their first iovec). */
#define RT_STATUS_BYTES 16

struct rt_send {
    struct rt_head head; /* ts_ns = syscall exit */
    struct rt_sock sock;
    __s32 fd;
    __s32 ret;           /* bytes accepted by the kernel, or -errno */
    __u64 enter_ts;
    __u64 xmit_first_ts; /* first net_dev_xmit inside the syscall (0: none) */
    __u64 xmit_last_ts;
    __u32 xmit_count;
    __u32 xmit_bytes;
    __s32 xmit_rc;       /* driver return code of the last transmit */
    __u32 syscall;       /* syscall number (write, writev, sendto, sendmsg) */
    __u32 flags;         /* RT_TX_* */
    __u32 _pad;
    char dev[RT_IFNAMSIZ];
};

struct rt_send_head {
    struct rt_send send; /* send.head.type = RT_REC_SEND_HEAD */
    __u32 head_len;      /* bytes copied into data: min(ret, RT_STATUS_BYTES), 0 if unreadable */
    __u32 _pad;
    char data[RT_STATUS_BYTES];
};

struct rt_accept {
    struct rt_head head; /* ts_ns = syscall exit */
    __s32 fd;            /* new connection's fd, or -errno */
    __s32 listen_fd;
    __u64 enter_ts;
    __u32 syscall;
    __u32 _pad;
};

struct rt_state {
    struct rt_head head; /* ts_ns = the transition */
    struct rt_sock sock;
    __s32 oldstate;      /* TCP_* numbers of include/net/tcp_states.h */
    __s32 newstate;
    __u64 syn_recv_ts;   /* with ESTABLISHED: when the child socket entered SYN_RECV */
    __s32 fd;            /* the fd being closed, when the server's close() caused it; else -1 */
    __u32 _pad;
};

struct rt_retransmit {
    struct rt_head head;
    struct rt_sock sock;
    __s32 state;
    __s32 err;
};

struct rt_reset {
    struct rt_head head;
    struct rt_sock sock;
    __u32 direction; /* RT_RESET_SENT / RT_RESET_RECEIVED */
    __s32 state;
    __u32 reason;    /* enum sk_rst_reason when sent (kernel-specific numbers) */
    __u32 _pad;
};

struct rt_drop {
    struct rt_head head;
    struct rt_sock sock;
    __u64 location;  /* kernel address that dropped it (kfree_skb) */
    __u32 kind;      /* RT_DROP_* */
    __u32 reason;    /* enum skb_drop_reason (kfree_skb) */
    __s32 rmem_alloc;  /* sock_rcvqueue_full */
    __s32 sk_rcvbuf;
};

/* Run-time configuration, written by the loader before traffic flows. Filters are small
 * arrays compared inline: a hash lookup on every read()/write() of the whole system would
 * cost more than everything else the probes do. */
#define RT_MAX_TARGETS 8

struct rt_config {
    __u32 flags;        /* RT_CFG_* */
    __u32 wakeup_every; /* wake the consumer every N records per CPU (0/1: every record) */
    __u32 tgid_count;
    __u32 port_count;
    __u32 tgids[RT_MAX_TARGETS];
    __u16 ports[RT_MAX_TARGETS];
};

#endif /* REQTRACE_EVENTS_H */
