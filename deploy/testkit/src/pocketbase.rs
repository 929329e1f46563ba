//! Placeholder: filled by the service that needs this server.
