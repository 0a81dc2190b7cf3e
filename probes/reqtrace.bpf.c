/*
 * reqtrace.bpf.c: the kernel half of a request's timeline, joined in BPF maps.
 *
 * Theory of operation
 * -------------------
 * Raw events are not streamed to user space (a naive probe set costs more than the server).
 * Instead each event updates a small piece of state and only a few points emit a record:
 *
 *   per CPU     hardirq in progress, NET_RX raise/entry, current NAPI poll start, and two
 *               small rings of recent packets: queued by netif_rx (lo, veth) and handed to
 *               the stack by netif_receive_skb, matched later by skb address
 *   per socket  identity (ports, addresses, cookie) and the receive path of the first data
 *               segment since the last recv, plus segment/byte totals (LRU, key = sk)
 *   per thread  the last epoll wait (enter, exit, wakeup) and the syscall in flight
 *
 *   recv exit   -> RT_REC_RECV: socket + syscall + last epoll wait + pending receive path
 *   send exit   -> RT_REC_SEND: socket + syscall + device transmits inside it
 *   accept exit, TCP state changes, retransmits, resets, drops -> their own records
 *
 * Cost rules (every probe here runs for the whole machine, not just the server):
 *   - the target filters are arrays in the config, compared inline (no hash lookup);
 *   - per-packet state lives in per-CPU rings, never in a shared map (no lock, no update);
 *   - per-thread state is one hash entry made once per thread, not per syscall;
 *   - the per-socket LRU uses per-CPU LRU lists (BPF_F_NO_COMMON_LRU): no global lock;
 *   - records are submitted without waking the consumer, except every Nth.
 * Receive processing is synchronous per packet (netif_receive_skb -> IP -> TCP -> the
 * socket) on one CPU, so the packet rings hold the few skbs in flight on that CPU; a
 * segment TCP processes later from the socket backlog (socket busy in a syscall) is marked
 * RT_RX_PROCESS_CONTEXT and keeps only its TCP times.
 *
 * Filters (target processes, target local ports) are written by the loader before traffic
 * flows. Kernel data is read only from tracepoint fields (layout from tracefs) or kept as
 * opaque pointers; nothing is read through kernel header struct layouts.
 *
 * Each probe point is compiled with the adapter its plan entry chose: the loader defines
 * RT_<POINT> to one of the RT_MECH_* values of events.h (see tracer/kernel/bpf_program.py).
 * Points left undefined are absent and their fields stay 0 in the records.
 *
 * Files, one concern each (tracer/kernel/bpf_program.py pastes them in place of their
 * #include lines: BCC rewrites map calls and probe definitions only in the main text):
 *   events.h                 record layouts shared with user space (a normal include)
 *   state.bpf.h              constants, per-CPU/socket/thread state, the maps
 *   helpers.bpf.h            config and filters, socket identity, record submission
 *   rx_path.bpf.h            hardirq, NET_RX softirq, NAPI poll, netif_rx/receive_skb
 *   tcp_wakeup.bpf.h         tcp_probe, sk_data_ready, the server thread's wakeup
 *   epoll.bpf.h              epoll_wait per thread
 *   syscalls.bpf.h           recv/send/accept/close, one record at exit
 *   connection.bpf.h         TCP state changes, retransmits, resets, drops
 *   adapters_*.h             each probe point per mechanism (tracepoint, raw tracepoint,
 *                            fentry/kprobe), chosen at compile time
 */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <asm/unistd.h> /* syscall numbers: ABI, the same for every kernel of an arch */
/* Enums that tracepoint records use as field types (the generated argument structs need
 * them complete); only the enum definitions are used, never a struct layout. */
#if __has_include(<net/dropreason-core.h>)
#include <net/dropreason-core.h>
#elif __has_include(<net/dropreason.h>)
#include <net/dropreason.h>
#endif
#if __has_include(<net/rstreason.h>)
#include <net/rstreason.h>
#endif

#include "events.h"

#include "state.bpf.h"
#include "helpers.bpf.h"
#include "rx_path.bpf.h"
#include "tcp_wakeup.bpf.h"
#include "epoll.bpf.h"
#include "syscalls.bpf.h"
#include "connection.bpf.h"

#include "adapters_tracepoint.h"
#include "adapters_raw_tracepoint.h"
#include "adapters_function.h"
