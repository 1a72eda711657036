//! Collects every error of one attribute, so a single build reports them all.

/// The errors found so far, in source order.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// All of them as one error, or `None` if there were none.
    pub(crate) fn finish(self) -> Option<syn::Error> {
        self.0
    }
}
