"""Try the exchange client against a running stack (`make run`): products, candles, an order, its fill."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from decimal import Decimal

from prometheus_client import CollectorRegistry

from services.ratelimit.settings import RatelimitSettings
from shared.exchange import ApiKey, ExchangeClient
from shared.exchange.factory import KEY_VARIABLES, throwaway_key
from shared.exchange.models import MarketIoc, OrderConfiguration
from shared.quota import QuotaClient
from shared.settings import DEV_API_TOKEN, load_settings


async def main() -> None:
    quota = QuotaClient(
        base_url=os.environ.get("RATELIMIT_URL", "http://127.0.0.1:8001"),
        token=os.environ.get("TRADER_API_TOKEN", DEV_API_TOKEN),
        config=load_settings(RatelimitSettings).ratelimit,
        registry=CollectorRegistry(),
    )
    client = ExchangeClient(
        base_url=os.environ.get("EXCHANGE_API_URL", "http://127.0.0.1:8010"),
        quota=quota,
        registry=CollectorRegistry(),
        api_key=ApiKey.from_env() if any(os.environ.get(v) for v in KEY_VARIABLES) else throwaway_key(),
    )
    try:
        page = await client.list_products()
        top = sorted(page.products, key=lambda p: p.approximate_quote_24h_volume or 0, reverse=True)[:5]
        print(f"list_products: {page.num_products} products; top 24h quote volume:")
        for p in top:
            print(
                f"  {p.product_id:10} price {p.price}  24h {p.price_percentage_change_24h:+.2f}%  "
                f"min {p.quote_min_size} {p.quote_currency_id}"
            )
        now = int((await client.server_time()).epoch_seconds)  # the exchange's clock (the simulator's may run fast)
        candles = await client.get_candles("BTC-USD", start=now - 3600, end=now, granularity="FIFTEEN_MINUTE")
        print(f"get_candles BTC-USD FIFTEEN_MINUTE, last hour: {len(candles)} candles, newest first")
        for c in candles:
            print(
                f"  {time.strftime('%H:%M', time.gmtime(c.start))}  o {c.open}  h {c.high}  l {c.low}  "
                f"c {c.close}  v {c.volume}"
            )
        client_order_id = str(uuid.uuid4())
        created = await client.create_order(
            client_order_id=client_order_id,
            product_id="BTC-USD",
            side="BUY",
            configuration=OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal("25"))),
        )
        assert created.success_response is not None
        order = await client.get_order(created.success_response.order_id)
        print(f"create_order BUY BTC-USD quote_size 25 (client_order_id {client_order_id}):")
        print(
            f"  order {order.order_id} {order.status}: filled {order.filled_size} BTC "
            f"at {order.average_filled_price}, fees {order.total_fees}"
        )
        fills = (await client.list_fills(order_ids=[order.order_id])).fills
        for f in fills:
            print(
                f"  fill {f.trade_id}: {f.base_size} BTC @ {f.price} {f.liquidity_indicator} commission {f.commission}"
            )
        balances = {a.currency: a.available_balance.value for a in (await client.accounts()).accounts}
        print(f"accounts: USD {balances.get('USD')}  BTC {balances.get('BTC')}")
    finally:
        await client.aclose()
        await quota.aclose()


if __name__ == "__main__":
    asyncio.run(main())
