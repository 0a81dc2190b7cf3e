/*
 * Trivial programs that `reqtrace doctor` and the loader attach to each candidate hook to
 * find out, for real, which attach mechanisms this kernel allows. They do nothing and are
 * detached straight away.
 */
int trial_tracepoint(void *ctx) { return 0; }
int trial_raw_tracepoint(struct bpf_raw_tracepoint_args *ctx) { return 0; }
int trial_kprobe(struct pt_regs *ctx) { return 0; }
