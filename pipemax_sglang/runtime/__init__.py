"""Runtime pieces that may use torch but never sglang: status board, host pool, transfer engine."""
