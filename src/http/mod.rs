//! HTTP/1.x heads: our own bounded parser and writer, and the front door that reads them.

pub mod head;
