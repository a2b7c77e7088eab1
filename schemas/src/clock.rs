//! The wall clock, read one way by every process.

/// Milliseconds since the Unix epoch; 0 on a clock set before 1970 (never a
/// panic in a long-running process).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_the_retailrocket_log_and_moves_forward() {
        let a = super::now_ms();
        assert!(a > 1_433_221_332_117, "{a}");
        assert!(super::now_ms() >= a);
    }
}
