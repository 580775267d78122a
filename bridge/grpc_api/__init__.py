"""The bridge's gRPC API (`spiffebridge.v1.CredentialService`): server, servicer, caller
authorization by JWT-SVID, and the store-to-message conversion."""
