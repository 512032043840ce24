//! Where the drop-in's link comes from, again after it died: the resolved SSH target and the
//! sharing options, and the link in use while it is up.

use crate::transport::link::{self, Link, LinkOptions};
use crate::transport::ssh::{SshError, SshTarget};

/// Opens the link to the Mac, and opens it again once it closed.
#[derive(Debug)]
pub struct LinkSource {
    target: SshTarget,
    options: LinkOptions,
    current: Option<Link>,
}

impl LinkSource {
    pub fn new(target: SshTarget, options: LinkOptions) -> Self {
        Self {
            target,
            options,
            current: None,
        }
    }

    /// The link in use, or a new one when there is none or it closed.
    pub async fn link(&mut self) -> Result<Link, SshError> {
        if let Some(link) = self.current.as_ref().filter(|l| !l.is_closed()) {
            return Ok(link.clone());
        }
        let link = link::open(&self.target, &self.options).await?;
        self.current = Some(link.clone());
        Ok(link)
    }

    /// The link in use, if one is open.
    pub fn current(&self) -> Option<Link> {
        self.current.clone()
    }

    /// Drop the link after a failure on it, so the next use opens a fresh one.
    pub fn forget(&mut self) {
        self.current = None;
    }
}
