//! SIP signalling and session descriptions. This is the only place the SIP and SDP crates are
//! named; the rest of hookflash speaks the types defined here.

pub mod auth;
pub mod call;
pub mod capabilities;
pub mod conformance;
pub mod dialog_events;
pub mod digest;
pub mod guard;
pub mod info_dtmf;
pub mod message;
pub mod refer_notifier;
pub mod register;
pub mod registrar;
pub mod repair;
pub mod replaces;
pub mod route;
pub mod server;
pub mod tcp;
pub mod udp;
