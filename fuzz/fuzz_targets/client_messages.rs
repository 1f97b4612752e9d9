//! Client messages as geogate reads them before anything is forwarded:
//! arbitrary bytes framed as each message type the session decodes. No
//! input may panic, and a Bind's values read in place
//! (`BindFrame::params`) must agree with pgwire's decoder whenever the
//! frame passes geogate's structural check.
//!
//! The first byte picks the message type, the rest is its body.

#![no_main]

use bytes::BytesMut;
use geogate::wire::validate::{BindFrame, client_message_well_formed, parse_view};
use libfuzzer_sys::fuzz_target;
use pgwire::messages::{DecodeContext, Message, ProtocolVersion, extendedquery::Bind};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let tag = b"BPQDCE"[pick as usize % 6];
    let mut frame = vec![tag];
    frame.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    frame.extend_from_slice(body);
    let well_formed = client_message_well_formed(&frame);
    let _ = parse_view(&frame);
    let Some(bind) = BindFrame::new(&frame) else {
        return;
    };
    let _ = bind.statement_name();
    let mine = bind.params();
    assert!(
        well_formed,
        "BindFrame::new accepted a frame the check refuses"
    );
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    let theirs = Bind::decode(&mut BytesMut::from(&frame[..]), &ctx);
    let (Some(mine), Ok(Some(theirs))) = (mine, theirs) else {
        // A well-formed Bind is read by both.
        panic!("a well-formed Bind that one reader refused");
    };
    assert_eq!(mine.formats, theirs.parameter_format_codes);
    let values: Vec<Option<&[u8]>> = theirs.parameters.iter().map(|v| v.as_deref()).collect();
    assert_eq!(mine.values, values);
});
