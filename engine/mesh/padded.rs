//! Cache-line padding for values written by one thread and read by others.

/// Pads a value to its own cache line pair (128 bytes: adjacent-line
/// prefetchers pull lines in pairs on x86).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
