//! Implicit-feedback weight of each event kind: `r` of a (user, item) pair is
//! the sum of its events' weights, and confidence is `alpha · r`.

use schemas::EventKind;
use serde::{Deserialize, Serialize};

/// Weight of one event of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventWeights {
    pub view: f32,
    pub addtocart: f32,
    pub transaction: f32,
}

impl Default for EventWeights {
    /// view 1, addtocart 4, transaction 8 (the original system's weights).
    fn default() -> Self {
        Self { view: 1.0, addtocart: 4.0, transaction: 8.0 }
    }
}

impl EventWeights {
    /// The weight of one event of kind `kind`.
    pub fn of(&self, kind: EventKind) -> f32 {
        match kind {
            EventKind::View => self.view,
            EventKind::AddToCart => self.addtocart,
            EventKind::Transaction => self.transaction,
        }
    }
}
