"""The deltamem gRPC service: configuration, servicer, error mapping, server and its command line."""
