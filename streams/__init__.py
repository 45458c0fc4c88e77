"""The Faust application: topics, agents, the worker and the command line."""
