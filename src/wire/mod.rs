//! Client side of the PostgreSQL wire protocol: framing on top of
//! `pgwire::messages`, startup (SSL/GSS/cancel), client authentication.

pub mod auth;
pub mod error;
pub mod frame;
pub mod scram;
pub mod startup;
pub mod stream;
pub mod tls;
pub mod validate;

pub use error::ClientError;
pub use frame::{BackendScanner, FrameError, FrameHeader, ScanEvents, peek_frame};

#[cfg(test)]
mod no_panic_tests {
    //! Network input must never panic: random bytes through every decoder
    //! geogate applies to client or gateway input.

    use bytes::BytesMut;
    use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

    use super::scram::{ScramServer, ScramVerifier};
    use super::startup::StartupDecoder;
    use super::{BackendScanner, ScanEvents, peek_frame};

    /// A small deterministic generator (no dependency needed for this).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            let n = (self.next() as usize) % max;
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn random_input_never_panics_any_decoder() {
        let mut rng = Lcg(42);
        let verifier = ScramVerifier::from_password("x");
        let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        ctx.awaiting_frontend_ssl = false;
        ctx.awaiting_frontend_startup = false;
        for i in 0..20_000 {
            let mut data = rng.bytes(64);
            let _ = peek_frame(&data, 1 << 20);
            let _ = StartupDecoder::new().decode(&mut BytesMut::from(&data[..]));
            // Well-framed startup, SSL, GSS and cancel packets with random bodies.
            for code in [196608i32, 80877102, 80877103, 80877104] {
                let mut p = ((data.len() + 8) as i32).to_be_bytes().to_vec();
                p.extend_from_slice(&code.to_be_bytes());
                p.extend_from_slice(&data);
                let mut d = StartupDecoder::new();
                let mut b = BytesMut::from(&p[..]);
                while let Ok(Some(_)) = d.decode(&mut b) {}
            }
            let mut s = BackendScanner::new();
            let _ = s.feed(&data, &mut ScanEvents::default());
            let mut scram = ScramServer::new(verifier.clone());
            let _ = scram.server_first(&data);
            let _ = scram.server_final(&data);
            // A well-framed message of a type the session decodes, random body.
            let tag = b"QPBCDESHXFdcfp"[i % 14];
            let len = (data.len() + 4) as i32;
            let mut frame = vec![tag];
            frame.extend_from_slice(&len.to_be_bytes());
            frame.append(&mut data);
            let _ = super::validate::parse_view(&frame);
            let bind = super::validate::BindFrame::new(&frame).map(|b| b.params());
            // As the session does: validate, then decode.
            if super::validate::client_message_well_formed(&frame) {
                let decoded = PgWireFrontendMessage::decode(&mut BytesMut::from(&frame[..]), &ctx);
                // The in-place reading of a Bind agrees with pgwire's.
                if let (Some(Some(mine)), Ok(Some(PgWireFrontendMessage::Bind(b)))) =
                    (&bind, &decoded)
                {
                    assert_eq!(mine.formats, b.parameter_format_codes);
                    let theirs: Vec<Option<&[u8]>> =
                        b.parameters.iter().map(|v| v.as_deref()).collect();
                    assert_eq!(mine.values, theirs);
                }
            }
            if super::validate::sasl_initial_well_formed(&frame[5..]) {
                let mut p = BytesMut::from(&frame[..]);
                p[0] = b'p';
                if let Ok(Some(PgWireFrontendMessage::PasswordMessageFamily(m))) =
                    PgWireFrontendMessage::decode(&mut p, &ctx)
                {
                    let _ = m.into_sasl_initial_response();
                }
            }
        }
    }
}
