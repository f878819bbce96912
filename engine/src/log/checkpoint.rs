//! The clean-shutdown checkpoint of a partition's active segment: what a
//! restart needs to trust the segment without scanning it. One text line
//! with a CRC-32C over its fields, so that a half-written or edited file is
//! detected and the segment is scanned instead.

/// The active segment's state at clean shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveCheckpoint {
    pub base_offset: i64,
    pub size_bytes: u64,
    pub next_offset: i64,
    pub max_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("no line end (half-written?)")]
    Unterminated,
    #[error("version {0:?} is not v2")]
    Version(String),
    #[error("expected 6 fields, found {0}")]
    FieldCount(usize),
    #[error("field {0} is not a number")]
    Field(&'static str),
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("inconsistent values")]
    Inconsistent,
}

const VERSION: &str = "v2";
const FIELD_COUNT: usize = 6;

impl ActiveCheckpoint {
    fn fields(&self) -> String {
        format!(
            "{VERSION} {} {} {} {}",
            self.base_offset, self.size_bytes, self.next_offset, self.max_timestamp_ms
        )
    }

    pub fn encode(&self) -> String {
        let fields = self.fields();
        let crc = crc32c::crc32c(fields.as_bytes());
        format!("{fields} {crc:08x}\n")
    }

    pub fn decode(text: &str) -> Result<ActiveCheckpoint, CheckpointError> {
        // The line end is written last: without it the file was cut short.
        let line = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Unterminated)?;
        let fields: Vec<&str> = line.split(' ').collect();
        if fields[0] != VERSION {
            return Err(CheckpointError::Version(
                fields[0].chars().take(16).collect(),
            ));
        }
        if fields.len() != FIELD_COUNT {
            return Err(CheckpointError::FieldCount(fields.len()));
        }
        let number = |i: usize, name: &'static str| -> Result<i64, CheckpointError> {
            fields[i].parse().map_err(|_| CheckpointError::Field(name))
        };
        let checkpoint = ActiveCheckpoint {
            base_offset: number(1, "base_offset")?,
            size_bytes: fields[2]
                .parse()
                .map_err(|_| CheckpointError::Field("size_bytes"))?,
            next_offset: number(3, "next_offset")?,
            max_timestamp_ms: number(4, "max_timestamp_ms")?,
        };
        let stored =
            u32::from_str_radix(fields[5], 16).map_err(|_| CheckpointError::Field("crc"))?;
        let computed = crc32c::crc32c(checkpoint.fields().as_bytes());
        if stored != computed {
            return Err(CheckpointError::Checksum { stored, computed });
        }
        let consistent = checkpoint.base_offset >= 0
            && checkpoint.next_offset >= checkpoint.base_offset
            && (checkpoint.size_bytes > 0 || checkpoint.next_offset == checkpoint.base_offset);
        if !consistent {
            return Err(CheckpointError::Inconsistent);
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example() -> ActiveCheckpoint {
        ActiveCheckpoint {
            base_offset: 100,
            size_bytes: 4096,
            next_offset: 142,
            max_timestamp_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn round_trip() {
        let text = example().encode();
        assert!(text.starts_with("v2 100 4096 142 1700000000123 "));
        assert_eq!(ActiveCheckpoint::decode(&text), Ok(example()));
    }

    #[test]
    fn rejects_old_and_inconsistent_checkpoints() {
        assert_eq!(
            ActiveCheckpoint::decode("v1 0 10 3 5\n"),
            Err(CheckpointError::Version("v1".into()))
        );
        assert_eq!(
            ActiveCheckpoint::decode(""),
            Err(CheckpointError::Unterminated)
        );
        let bad = ActiveCheckpoint {
            next_offset: 99,
            ..example()
        };
        assert_eq!(
            ActiveCheckpoint::decode(&bad.encode()),
            Err(CheckpointError::Inconsistent)
        );
        let edited = example().encode().replace(" 4096 ", " 4097 ");
        assert!(matches!(
            ActiveCheckpoint::decode(&edited),
            Err(CheckpointError::Checksum { .. })
        ));
    }

    proptest! {
        /// Every strict prefix of a checkpoint (a write cut short) is refused.
        #[test]
        fn any_cut_is_refused(
            base in 0i64..1 << 40,
            size in 1u64..1 << 32,
            records in 0i64..1 << 30,
            ts in -1i64..1 << 42,
            cut in any::<prop::sample::Index>(),
        ) {
            let checkpoint = ActiveCheckpoint {
                base_offset: base,
                size_bytes: size,
                next_offset: base + records,
                max_timestamp_ms: ts,
            };
            let text = checkpoint.encode();
            prop_assert_eq!(ActiveCheckpoint::decode(&text), Ok(checkpoint));
            let cut = cut.index(text.len());
            prop_assert!(ActiveCheckpoint::decode(&text[..cut]).is_err());
        }
    }
}
