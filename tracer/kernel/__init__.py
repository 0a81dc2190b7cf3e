"""Talking to the kernel: what it offers, which probes attach, loading and reading them.

system_facts.py    root, BCC, tracefs, headers, lockdown, BTF: can we trace here
attach_trials.py   try each attach mechanism for real (tracepoint, raw tp, fentry, kprobe)
attach_plan.py     the probe plan: per probe point, the strategy chosen and why
interfaces.py      network interfaces and their drivers (the NIC-driver poll probe)
bpf_program.py     the plan as compiler flags; the program text BCC compiles
probe_loader.py    compile, attach, write the filters, hand out decoded records, detach
ringbuf_reader.py  the ring buffer read through mmap, a batch at a time
native_stderr.py   keep clang/libbcc chatter off the terminal
"""
