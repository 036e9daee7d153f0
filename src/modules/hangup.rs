//! `hangup`: hang up the leg that pressed the code (Kazoo's behaviour). It takes no data.
