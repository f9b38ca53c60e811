"""servesim: a discrete-event simulator for the accuracy / latency / cost trade-offs of ML serving."""
