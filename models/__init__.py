"""Online models (River), the session-intent LSTM and the offer decision."""
