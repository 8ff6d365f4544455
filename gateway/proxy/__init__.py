"""Carrying one request to a model's server and its answer back: the exchange (resolve, ticket,
admission, upstream, error mapping, release), the byte pipes, the upstream client, and the
progress a waiting client hears."""
