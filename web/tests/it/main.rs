//! Integration tests of the web: the real `run` in-process against a real ClickHouse (tables made by the
//! writer's migrations, rows by the writer's insert path) and a real nats-server, plus headless Chromium.

mod api;
mod browser;
mod harness;
mod live;
mod v3;
