#pragma once

/// Umbrella header: everything a user of the bus needs.
#include "marty/messaging/backend.hpp"
#include "marty/messaging/blocking_event_bus.hpp"
#include "marty/messaging/capabilities.hpp"
#include "marty/messaging/codec.hpp"
#include "marty/messaging/error.hpp"
#include "marty/messaging/event_bus.hpp"
#include "marty/messaging/memory_backend.hpp"
#include "marty/messaging/message.hpp"
#include "marty/messaging/pattern_config.hpp"
#include "marty/messaging/pattern_selector.hpp"
#include "marty/messaging/result.hpp"
#include "marty/messaging/router.hpp"
#include "marty/messaging/subject.hpp"
#include "marty/messaging/types.hpp"
