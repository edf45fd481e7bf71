//! Host ports for tests that publish: a block of this test process's own, below the
//! kernel's ephemeral range.

/// The first port the kernel hands out to outgoing connections by default
/// (`net.ipv4.ip_local_port_range`): a listening port at or above it can be taken at any
/// moment as the source port of a connection another test opens.
const EPHEMERAL_START: u16 = 32768;
const FIRST: u16 = 10000;
const BLOCK: u16 = 20;

/// Port `n` (0..20) of this process's block. Tests of one binary run as threads of one
/// process and use distinct `n`; test binaries run one after another, and the block
/// follows the process ID so one binary's lingering sockets do not meet the next's.
pub fn port(n: u16) -> u16 {
    assert!(n < BLOCK, "test ports go from 0 to {}", BLOCK - 1);
    let blocks = u32::from((EPHEMERAL_START - FIRST) / BLOCK);
    FIRST + (std::process::id() % blocks) as u16 * BLOCK + n
}
