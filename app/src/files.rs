//! Asking the user for a file: the native dialog (rfd, through the desktop
//! portal) behind a small trait, so tests answer in its place. Every field
//! that takes a path also takes typing, for systems without a portal.

use std::path::PathBuf;

/// What a dialog is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// a .gguf or .safetensors file
    ModelFile,
    /// a Hugging Face model folder
    ModelFolder,
    /// a text to compare formats on
    Text,
}

pub trait FilePicker {
    /// The path the user chose, or `None` when they cancelled.
    fn pick(&self, kind: FileKind) -> Option<PathBuf>;
}

/// The system's own dialog.
pub struct NativeDialog;

impl FilePicker for NativeDialog {
    fn pick(&self, kind: FileKind) -> Option<PathBuf> {
        let dialog = rfd::FileDialog::new();
        match kind {
            FileKind::ModelFile => dialog.add_filter("model", &["gguf", "safetensors"]).pick_file(),
            FileKind::ModelFolder => dialog.set_title("A Hugging Face model folder").pick_folder(),
            FileKind::Text => dialog.add_filter("text", &["txt", "md"]).add_filter("any", &["*"]).pick_file(),
        }
    }
}
