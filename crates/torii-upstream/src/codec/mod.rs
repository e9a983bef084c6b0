//! The HTTP/1.1 wire format as an upstream client speaks it: [`encode`] writes a request
//! (head and body framing), [`decode`] parses a response head, [`chunked`] decodes a chunked
//! body. Nothing here knows about connections, pools or the gateway; the fuzz targets drive
//! these parsers directly.

pub mod chunked;
pub mod decode;
pub mod encode;
