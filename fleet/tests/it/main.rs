//! Integration tests of the fleet kit over real sockets: the HTTP serve loop's deadlines, connection cap
//! and drain.

mod serve;
