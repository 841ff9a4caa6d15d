"""HTTP machinery that the public API and the internal services share: how a request's
body and query are read, how an error becomes an answer, how headers are set below
the application."""
