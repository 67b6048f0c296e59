"""The benchmark tools (not DVC stages): the method x reduction x seed grid and its report
(``python -m bench``), fidelity to the reference implementation, the lambda/mu sweep, peak
memory and a per-phase profile. They call the library; nothing in kprune imports them."""
