"""Generated: the SPIFFE Broker API (proto/spiffe/broker/api.proto)."""
