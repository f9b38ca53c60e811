"""Decisions: batching, routing and (in later issues) exit/recall and autoscaling
policies. Pure functions of what a deployed system can observe; no SimPy inside."""
