//! The IO drivers: the protocol engine over real `std::net::UdpSocket`s, files and
//! terminals. Everything that touches the operating system lives below here.

pub mod relay;
