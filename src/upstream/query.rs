//! Geogate's own queries on a gateway (the tenant directory): one statement
//! with text parameters, rows back as text. Not on the client path.

use bytes::{Buf, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::extendedquery::{Bind, Execute, Parse, Sync};

use super::{Upstream, UpstreamError};

/// One row, each column as text (`None` for NULL).
pub type TextRow = Vec<Option<String>>;

impl Upstream {
    /// Runs `sql` with `params` (text format) through the extended protocol
    /// and returns every row in text format. The connection must be idle.
    pub async fn query_text(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<TextRow>, UpstreamError> {
        let mut out = BytesMut::new();
        let encode = |r: pgwire::error::PgWireResult<()>| {
            r.map_err(|e| UpstreamError::Protocol(e.to_string()))
        };
        encode(Parse::new(None, sql.to_string(), vec![]).encode(&mut out))?;
        let values = params
            .iter()
            .map(|p| Some(bytes::Bytes::copy_from_slice(p.as_bytes())))
            .collect();
        encode(Bind::new(None, None, vec![], values, vec![]).encode(&mut out))?;
        encode(Execute::new(None, 0).encode(&mut out))?;
        encode(Sync::new().encode(&mut out))?;
        self.writer.write_all_flush(&out).await?;
        let mut rows = Vec::new();
        self.read_answers(1, |tag, body| {
            if tag == b'D' {
                rows.push(parse_data_row(body)?);
            }
            Ok(())
        })
        .await?;
        Ok(rows)
    }
}

/// A DataRow's payload: int16 count, then per column int32 length (-1 = NULL) and bytes.
fn parse_data_row(mut body: &[u8]) -> Result<TextRow, UpstreamError> {
    let bad = || UpstreamError::Protocol("malformed DataRow".into());
    if body.len() < 2 {
        return Err(bad());
    }
    let n = body.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if body.len() < 4 {
            return Err(bad());
        }
        let len = body.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            return Err(bad());
        }
        row.push(Some(String::from_utf8_lossy(&body[..len]).into_owned()));
        body.advance(len);
    }
    Ok(row)
}

/// The SQLSTATE field ('C') of an ErrorResponse payload.
pub(super) fn sqlstate(mut body: &[u8]) -> String {
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if field == b'C' {
            return String::from_utf8_lossy(&rest[..end]).into_owned();
        }
        body = rest.get(end + 1..).unwrap_or(&[]);
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows_decode_with_nulls_and_refuse_truncation() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(b"eu");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            parse_data_row(&b).unwrap(),
            vec![Some("eu".to_string()), None]
        );
        assert!(parse_data_row(&b[..5]).is_err());
        assert!(parse_data_row(&[0, 1, 0, 0, 0, 9, b'x']).is_err());
    }

    #[test]
    fn sqlstate_is_read_from_error_fields() {
        assert_eq!(sqlstate(b"SERROR\0C42P01\0Mno table\0\0"), "42P01");
        assert_eq!(sqlstate(b"SERROR\0"), "");
    }
}
