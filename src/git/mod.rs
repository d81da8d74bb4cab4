//! What promote writes into environment repos. So far: format-preserving edits of the promoted
//! value; commits, pushes and rollback come with the git writer.

pub mod edit;
