//! relay (in progress)
