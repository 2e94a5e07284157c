//! Decoding: exactly one frame from one WebSocket message, with limits, no I/O.

use super::*;

impl Frame {
    /// Decodes exactly one frame from `buf` (one whole WebSocket message), copying it.
    pub fn decode(buf: &[u8]) -> Result<Frame, FrameError> {
        Self::decode_shared(&Bytes::copy_from_slice(buf))
    }

    /// Decodes exactly one frame from a received message without copying: a DATA payload is a
    /// slice of `buf`.
    pub fn decode_shared(buf: &Bytes) -> Result<Frame, FrameError> {
        if buf.len() > MAX_FRAME {
            return Err(FrameError::TooLong);
        }
        let mut r = Reader(buf);
        let t = r.u8()?;
        let id = r.u32()?;
        let frame = match t {
            code::OPEN => {
                let window = r.u32()?;
                let target = match r.u8()? {
                    0 => {
                        let port = r.u16()?;
                        let host = r.text()?;
                        if host.is_empty() || port == 0 {
                            return Err(FrameError::Invalid("empty dial target"));
                        }
                        OpenTarget::Dial { host, port }
                    }
                    1 => OpenTarget::Bound { bind_id: r.u32()? },
                    2 => {
                        let port = r.u16()?;
                        let host = r.text()?;
                        if host.is_empty() || port == 0 {
                            return Err(FrameError::Invalid("empty dial target"));
                        }
                        OpenTarget::UdpDial { host, port }
                    }
                    3 => OpenTarget::UdpBound { bind_id: r.u32()? },
                    4 => OpenTarget::UdpAny,
                    _ => return Err(FrameError::Invalid("unknown open target")),
                };
                Frame::Open { id, window, target }
            }
            code::OPEN_OK => Frame::OpenOk {
                id,
                window: r.u32()?,
            },
            code::OPEN_REFUSED => Frame::OpenRefused {
                id,
                code: r.refuse_code()?,
                reason: r.text()?,
            },
            code::DATA => {
                let payload = r.rest();
                if payload.is_empty() || payload.len() > MAX_DATA {
                    return Err(FrameError::Invalid("data payload size"));
                }
                let payload = buf.slice(HEADER..);
                Frame::Data { id, payload }
            }
            code::DGRAM => {
                // Empty datagrams exist; the size is checked against the flow's kind when
                // it is dispatched (a UDP_ANY flow's address comes in front).
                let _ = r.rest();
                Frame::Dgram {
                    id,
                    payload: buf.slice(HEADER..),
                }
            }
            code::WINDOW => {
                let increment = r.u32()?;
                if increment == 0 {
                    return Err(FrameError::Invalid("zero window increment"));
                }
                Frame::Window { id, increment }
            }
            code::FIN => Frame::Fin { id },
            code::RESET => Frame::Reset {
                id,
                code: r.refuse_code()?,
                reason: r.text()?,
            },
            code::BIND => {
                let bind_id = r.u32()?;
                let port = r.u16()?;
                let addr = r.text()?;
                let mode_byte = r.u8()?;
                let mode = match mode_byte & !POOLED {
                    0 => BindMode::Forward,
                    1 => BindMode::Proxy {
                        // A text field holds at most MAX_TEXT bytes: this always fits.
                        auth: ProxyAuth::from_text(r.text()?).map_err(|_| FrameError::TooLong)?,
                    },
                    2 => BindMode::Udp,
                    _ => return Err(FrameError::Invalid("unknown bind mode")),
                };
                let pool = match mode_byte & POOLED == 0 {
                    true => None,
                    false => Some(Box::new(BindPool {
                        name: r.text()?,
                        policy: r.text()?,
                    })),
                };
                Frame::Bind {
                    bind_id,
                    addr,
                    port,
                    mode,
                    pool,
                }
            }
            code::BOUND => Frame::Bound {
                bind_id: r.u32()?,
                addr: r.text()?,
            },
            code::BIND_REFUSED => Frame::BindRefused {
                bind_id: r.u32()?,
                reason: r.text()?,
            },
            code::GO_AWAY => Frame::GoAway { reason: r.text()? },
            code::UNBIND => Frame::Unbind { bind_id: r.u32()? },
            code::ACK => Frame::Ack { received: r.u64()? },
            code::RESUME => Frame::Resume { received: r.u64()? },
            other => return Err(FrameError::UnknownType(other)),
        };
        if !r.0.is_empty() {
            return Err(FrameError::TooLong);
        }
        let session_frame = matches!(
            frame,
            Frame::Bind { .. }
                | Frame::Bound { .. }
                | Frame::BindRefused { .. }
                | Frame::GoAway { .. }
                | Frame::Unbind { .. }
                | Frame::Ack { .. }
                | Frame::Resume { .. }
        );
        if session_frame != (id == 0) {
            return Err(FrameError::Invalid(
                "stream id 0 is for session frames only",
            ));
        }
        Ok(frame)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn text(&mut self) -> Result<String, FrameError> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::Invalid("text is not utf-8"))
    }
    fn refuse_code(&mut self) -> Result<RefuseCode, FrameError> {
        RefuseCode::from_u8(self.u8()?).ok_or(FrameError::Invalid("unknown refusal code"))
    }
    fn rest(&mut self) -> &[u8] {
        std::mem::take(&mut self.0)
    }
}
