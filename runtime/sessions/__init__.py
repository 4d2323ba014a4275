"""Sessions: records, the manager, calls within a session, kept context, the state codec and the stores."""
