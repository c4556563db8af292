//! What the store's integration tests share.

/// Opens the sled database a `Store` of this process has just closed:
/// sled's flusher thread lets go of the file lock a moment after the last
/// handle is dropped, so a busy machine may still see it held.
pub(crate) fn reopen(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("cannot reopen {}: {error}", path.display()),
        }
    }
}

/// [`reopen`] for a `Store`: opens the store a `Store` of this process has
/// just closed, waiting the moment sled's flusher may still hold its lock.
#[allow(dead_code)] // not every test binary reopens a Store
pub(crate) fn reopen_store(
    path: &std::path::Path,
    config: &baton_store::StoreConfig,
) -> baton_store::Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match baton_store::Store::open(path, config) {
            Ok(store) => return store,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("cannot reopen {}: {error}", path.display()),
        }
    }
}
