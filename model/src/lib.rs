//! Pure math of the recommender: no I/O except the model artifact files.
//!
//! Layout:
//! - [`csr`]: the sparse user × item matrix ([`Csr`]).
//! - [`dense`]: row-major factor matrices ([`Factors`]) and vector kernels.
//! - [`als`]: implicit ALS (`implicit` 0.7 semantics), exact and CG row solvers,
//!   warm-started fits, fold-in of a single user or item.
//! - [`topn`]: batched scoring (one GEMM per block of users) with a bounded
//!   top-N heap.
//! - [`rerank`]: the original system's category re-rank.
//! - [`popularity`]: the popular-items fallback.
//! - [`similar`]: every item's nearest items by cosine of the item factors
//!   (the trainer publishes them; serving only reads them).
//! - [`artifact`]: versioned model directories, checksums, `CURRENT`.
//! - [`synthetic`]: small trained model versions for tests and benchmarks.
//! - [`weights`]: the implicit-feedback weight of each event kind.

pub mod als;
pub mod artifact;
pub mod csr;
pub mod dense;
pub mod popularity;
pub mod rerank;
pub mod similar;
pub mod synthetic;
pub mod topn;
pub mod weights;

pub use als::{fit, fit_with_init, fold_in, AlsModel, AlsParams, IterationStats, Solver};
pub use artifact::{Artifact, ArtifactError, Manifest};
pub use csr::Csr;
pub use dense::Factors;
pub use popularity::Popularity;
pub use rerank::{CategoryIndex, RerankParams};
pub use topn::{recommend_all, top_k, Scored};
pub use weights::{EventWeights, Recency};
