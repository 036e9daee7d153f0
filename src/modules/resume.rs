//! `resume`: cancel an in-progress transfer or unhold, reconnecting the original two parties.
//! It takes no data; its behaviour lives with the call state machine.
