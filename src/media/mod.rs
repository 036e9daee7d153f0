//! Media, the data plane: one call's media as a sans-IO core (`call`, with `leg`, `keys_out`,
//! `lookahead`, and the building blocks `latch`, `stream`, `rfc4733`, `inband`), the relay that
//! runs it on threads and sockets (`relay`, `batch`, `ports`), what hookflash plays (`g711`,
//! `tone`, `wav`, `clip`, `library`) and recording (`recorder`). Nothing here imports the control
//! plane (`call`, `modules`): legs, keys and time are the vocabulary below both; media values as
//! written in the config (tone scripts, files) are `crate::media_ref`'s.

pub mod batch;
pub mod call;
pub mod clip;
pub mod g711;
pub mod inband;
pub mod keys_out;
pub mod latch;
pub mod leg;
pub mod library;
pub mod lookahead;
pub mod mix;
pub mod ports;
pub mod recorder;
pub mod relay;
pub mod rfc4733;
pub mod stream;
pub mod tone;
pub mod wav;
