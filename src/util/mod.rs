//! Small shared helpers with no fc7 concepts in them: files (`fs`) and drawing (`draw`).

pub mod draw;
pub mod fs;
