//! Where points go: InfluxDB over HTTP, or daily line-protocol files; and the queue and writer
//! in front of them.

pub mod dead_letter;
pub mod files;
pub mod influx;
pub mod line_protocol;
pub mod queue;
pub mod retry;
pub mod sink;
pub mod store;
pub mod writer;

/// Runs disk work (a store read, an fsynced commit, a synced file write) without holding up
/// the other tasks of the runtime; a plain call where that is not possible (a current-thread
/// runtime, as in unit tests).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
