"""lookup: the lean result-lookup backend that sits behind the waiting room."""
